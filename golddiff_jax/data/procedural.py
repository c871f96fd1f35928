"""Procedurally generated images with image-like local structure, built offline from a seed.

Each image is a Gaussian random field with a natural-image power spectrum (amplitude ∝ 1/f),
mixed into colour channels by a random per-image colour matrix, with a few soft-edged shapes
on top (occlusion edges). Pixel correlations therefore decay with distance as in natural
images, so the PCA-locality masks are local at low noise and dense at high noise.
"""

from __future__ import annotations

import numpy as np


def _random_fields(rng: np.random.Generator, num: int, height: int, width: int,
                   channels: int) -> np.ndarray:
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  freq = np.sqrt(fy**2 + fx**2)
  amplitude = 1.0 / np.maximum(freq, 1.0 / max(height, width))
  amplitude[0, 0] = 0.0
  shape = (num, channels, height, width // 2 + 1)
  spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * amplitude
  fields = np.fft.irfft2(spectrum, s=(height, width), axes=(-2, -1))
  fields /= fields.std(axis=(-2, -1), keepdims=True) + 1e-12
  return np.moveaxis(fields, 1, -1)  # [num, H, W, C]


def _shapes(rng: np.random.Generator, num: int, height: int, width: int,
            channels: int, per_image: int = 3) -> np.ndarray:
  yy, xx = np.meshgrid(np.arange(height) / height, np.arange(width) / width, indexing="ij")
  out = np.zeros((num, height, width, channels))
  for _ in range(per_image):
    cy, cx = rng.uniform(0, 1, (2, num, 1, 1))
    radius = rng.uniform(0.08, 0.3, (num, 1, 1))
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    alpha = 1.0 / (1.0 + np.exp((dist - radius) * max(height, width)))  # soft edge ~1 px
    colour = rng.uniform(-1.5, 1.5, (num, 1, 1, channels))
    out = out * (1.0 - alpha[..., None]) + alpha[..., None] * colour
  return out


def procedural_images(num: int, height: int = 32, width: int = 32, channels: int = 3,
                      seed: int = 0) -> np.ndarray:
  """Returns ``num`` float32 images [num, H, W, C] in [-1, 1], deterministic in ``seed``."""
  for name, value in (("num", num), ("height", height), ("width", width),
                      ("channels", channels)):
    if int(value) < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  rng = np.random.default_rng(seed)
  fields = _random_fields(rng, num, height, width, channels)
  mix = rng.standard_normal((num, 1, 1, channels, channels)) * 0.4
  mix += np.eye(channels) * 0.8 + 0.4  # shared luminance component across channels
  fields = np.einsum("nhwc,nhwcd->nhwd", fields, mix)
  fields = fields / (fields.std(axis=(1, 2, 3), keepdims=True) + 1e-12)
  images = 0.6 * fields + _shapes(rng, num, height, width, channels)
  images += rng.uniform(-0.5, 0.5, (num, 1, 1, channels))  # per-image colour offset
  return np.tanh(0.7 * images).astype(np.float32)
