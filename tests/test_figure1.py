"""experiments/figure1_moons.py: posterior weights against float64 NumPy, and the picture on a
small moons set (the posterior concentrates as t → 0)."""

import io
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import golddiff_jax as gd  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax import plots, schedules  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax.data import builders  # noqa: E402  pylint: disable=g-import-not-at-top
import figure1_moons  # noqa: E402  pylint: disable=g-import-not-at-top


def test_posterior_weights_match_float64():
  rng = np.random.default_rng(3)
  points = rng.uniform(-1, 1, (300, 1, 1, 2)).astype(np.float32)
  stats = gd.fit(points)
  x_t = rng.standard_normal((5, 2)).astype(np.float32)
  for t in (900, 300, 20):
    abar = np.float64(schedules.alpha_bar(t))
    d2 = ((x_t[:, None, :].astype(np.float64)
           - np.sqrt(abar) * points.reshape(1, -1, 2).astype(np.float64)) ** 2).sum(-1)
    logits = -d2 / (2 * (1 - abar))
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(figure1_moons.posterior_weights(stats, x_t, t), want,
                               rtol=2e-3, atol=1e-7)


def test_figure_on_a_small_moons_set():
  # The moons builder's own generator (figure1_moons.moons reads the same points through TFDS,
  # which the data tests cover; skipping it here saves the dataset build).
  points = builders.two_moons(200, 0.05, 0)[0].reshape(200, 1, 1, 2).astype(np.float32)
  traced = figure1_moons.trace(points, num_samples=16, num_steps=10, seed=0)
  assert traced["effective_size"].shape == (10, 16)
  median = np.median(traced["effective_size"], axis=1)
  assert median[0] > 0.9 * 200 and median[-1] < 0.1 * 200  # the posterior concentrates
  data = plots.png_bytes(figure1_moons.figure(traced, (900, 400, 0)))
  with Image.open(io.BytesIO(data)) as image:
    assert image.size[0] >= 600 and image.size[1] >= 400
