"""Sample-quality metrics for the toy study (host NumPy, float64), and K*(τ).

Generated points x [n, d] are compared with held-out points y [m, d]:

* `sliced_w2`: √(mean over L random unit directions θ of W2²(θᵀx, θᵀy)), each 1-D W2² from the
  quantile functions at (i + ½)/q, q = max(n, m);
* `rbf_mmd2`: the unbiased MMD² with a Gaussian kernel, bandwidth the median pairwise distance
  of y (fixed by y, so runs compare on one kernel);
* `off_support_energy`: E‖x_inactive‖² (0 for exact zeros, (d − s)·δ² for approximate ones);
* on-support W2 is `sliced_w2` on the active coordinates;
* `mode_coverage`: each point's nearest mode centre (within 4 mode std) — the fraction of modes
  holding at least 20% of their share n/M, and the mass per mode;
* `variance_ratio`: per-coordinate var(x)/var(y) (NaN where var(y) = 0);
* nearest-training-point distance: `golddiff_jax.metrics.memorization`;
* `k_star`: the smallest K in a grid whose quality reaches τ.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _pair(x, y, name="x") -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
    raise ValueError(f"{name} and the reference must be [n, d] with the same d and n >= 2, got "
                     f"{x.shape} and {y.shape}")
  if not (np.isfinite(x).all() and np.isfinite(y).all()):
    raise ValueError(f"{name} or the reference contains NaN or Inf")
  return x, y


def directions(d: int, num: int, seed: int = 0) -> np.ndarray:
  """[num, d] unit vectors, uniform on the sphere (from ``jax.random.key(seed)``)."""
  g = np.asarray(jax.random.normal(jax.random.key(seed), (num, d), jnp.float32), np.float64)
  return g / np.linalg.norm(g, axis=1, keepdims=True)


def _quantiles(v: np.ndarray, q: int) -> np.ndarray:
  """[q, L] the empirical quantile function of each column of v [n, L] at (i + ½)/q."""
  v = np.sort(v, axis=0)
  idx = np.minimum(((np.arange(q) + 0.5) / q * len(v)).astype(np.int64), len(v) - 1)
  return v[idx]


def sliced_w2(x, y, *, num_directions: int = 256, seed: int = 0) -> float:
  x, y = _pair(x, y)
  theta = directions(x.shape[1], num_directions, seed)
  q = max(len(x), len(y))
  diff = _quantiles(x @ theta.T, q) - _quantiles(y @ theta.T, q)
  return float(np.sqrt(np.mean(diff ** 2)))


def _sq_dists(a, b):
  return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def median_bandwidth(y) -> float:
  y = np.asarray(y, np.float64)
  d = np.sqrt(_sq_dists(y, y))[np.triu_indices(len(y), 1)]
  return float(np.median(d)) or 1.0


def rbf_mmd2(x, y, *, bandwidth: float | None = None) -> float:
  """Unbiased MMD² with k(a, b) = exp(−‖a − b‖²/(2h²)), h = ``bandwidth`` or the median rule."""
  x, y = _pair(x, y)
  h = median_bandwidth(y) if bandwidth is None else float(bandwidth)
  k = lambda a, b: np.exp(-_sq_dists(a, b) / (2 * h * h))  # noqa: E731
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  n, m = len(x), len(y)
  return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
               + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def off_support_energy(x, active: Sequence[int]) -> float:
  x = np.asarray(x, np.float64)
  inactive = np.setdiff1d(np.arange(x.shape[1]), np.asarray(active))
  return float(np.mean(np.sum(x[:, inactive] ** 2, axis=1))) if len(inactive) else 0.0


def mode_labels(active_points, centers: np.ndarray, mode_std: float) -> np.ndarray:
  """Joint mode label of each point (pairs of active coordinates, base len(centers)), −1 when
  some pair lies farther than 4·mode_std from its nearest centre."""
  p = np.asarray(active_points, np.float64)
  labels = np.zeros(len(p), np.int64)
  for j in range(p.shape[1] // 2):
    pair = p[:, 2 * j:2 * j + 2]
    dist = np.sqrt(_sq_dists(pair, centers))
    nearest = dist.argmin(1)
    far = dist.min(1) > 4 * mode_std
    labels = np.where((labels < 0) | far, -1, labels * len(centers) + nearest)
  return labels


def mode_coverage(labels: np.ndarray, num_modes: int, *, min_share: float = 0.2) -> dict:
  """Fraction of the ``num_modes`` modes holding ≥ min_share·n/M points; mass per mode; the
  fraction of points on no mode."""
  labels = np.asarray(labels)
  mass = np.bincount(labels[labels >= 0], minlength=num_modes)[:num_modes] / len(labels)
  return {"coverage": float(np.mean(mass >= min_share / num_modes)),
          "mass": mass.tolist(), "off_mode": float(np.mean(labels < 0))}


def variance_ratio(x, y) -> np.ndarray:
  x, y = _pair(x, y)
  vy = y.var(0)
  return np.divide(x.var(0), vy, out=np.full(x.shape[1], np.nan), where=vy > 0)


def k_star(ks: Sequence[int], quality: Sequence[float], tau: float) -> int | None:
  """The smallest K in ``ks`` whose ``quality`` (lower is better, e.g. SW2) is ≤ τ; None if no
  K reaches τ. ``ks`` must be increasing."""
  ks, quality = list(ks), list(quality)
  if len(ks) != len(quality) or any(b <= a for a, b in zip(ks, ks[1:])):
    raise ValueError(f"ks must be increasing and match quality; got {ks} and {quality}")
  for k, q in zip(ks, quality):
    if np.isfinite(q) and q <= tau:
      return int(k)
  return None
