"""Posterior-concentration diagnostics against a float64 NumPy reference."""

import jax
import numpy as np
import pytest

import golddiff_jax as gd
from golddiff_jax import diagnostics, masks, schedules
from golddiff_jax.data import procedural_images

N, B, THETA = 60, 3, 0.03


@pytest.fixture(scope="module")
def setup():
  images = procedural_images(N + B, 8, 8, 3, seed=5)
  stats = gd.fit(images[:N])
  noise = np.random.default_rng(0).standard_normal((B, stats.dim)).astype(np.float32)
  subset = np.stack([np.random.default_rng(i).permutation(N)[:12] for i in range(B)])
  return stats, images[N:].reshape(B, -1), noise, subset.astype(np.int32)


def _x(setup, t):
  _, clean, noise, _ = setup
  abar = schedules.alpha_bar(t)
  return (np.sqrt(abar) * clean + np.sqrt(1 - abar) * noise).astype(np.float32), abar


def _reference(stats, x, abar, subset):
  db = np.asarray(stats.database, np.float64)
  delta = (x[:, None, :].astype(np.float64) - np.sqrt(abar) * db[None]) ** 2  # [B, N, D]
  scale = -0.5 / (1 - abar)

  def softmax(logits, axis):
    w = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return w / w.sum(axis=axis, keepdims=True)

  w = softmax(scale * delta.sum(-1), 1)  # [B, N]
  ordered = -np.sort(-w, 1)
  support = ((np.cumsum(ordered, 1) - ordered) < 0.99).sum(1)
  entropy = -(np.where(w > 0, w * np.log(np.where(w > 0, w, 1)), 0)).sum(1)
  member = np.zeros_like(w, bool)
  member[np.arange(len(x))[:, None], subset] = True
  mask = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, abar, THETA), np.float64)
  wm = softmax(scale * (delta @ mask), 1)  # [B, N, D]
  m_entropy = -(np.where(wm > 0, wm * np.log(np.where(wm > 0, wm, 1)), 0)).sum(1)
  return {"support": support, "effective_size": np.exp(entropy),
          "tail_mass": np.where(member, 0, w).sum(1),
          "masked_tail_mass": np.where(member[..., None], 0, wm).sum(1),
          "masked_effective_size": np.exp(m_entropy)}


@pytest.mark.parametrize("t", [700, 300])
def test_matches_numpy(setup, t):
  stats, _, _, subset = setup
  x, abar = _x(setup, t)
  got = diagnostics.posterior_support(stats, x, abar, subset=subset, mask_threshold=THETA,
                                      mask_impl="dense", chunk_size=16)
  ref = _reference(stats, x, abar, subset)
  np.testing.assert_array_equal(got["support"], ref["support"])
  np.testing.assert_allclose(got["effective_size"], ref["effective_size"], rtol=1e-3)
  np.testing.assert_allclose(got["tail_mass"], ref["tail_mass"], atol=1e-5)
  np.testing.assert_allclose(got["masked_tail_mass"], ref["masked_tail_mass"], atol=1e-5)
  np.testing.assert_allclose(got["masked_effective_size"], ref["masked_effective_size"],
                             rtol=2e-3)
  assert got["subset_support"].shape == (B,)
  assert np.all(np.asarray(got["subset_effective_size"]) <= 12 + 1e-3)


def test_chunk_size_does_not_matter(setup):
  stats, _, _, subset = setup
  x, abar = _x(setup, 500)
  a = diagnostics.posterior_support(stats, x, abar, subset=subset, mask_threshold=THETA,
                                    mask_impl="dense", chunk_size=16)
  b = diagnostics.posterior_support(stats, x, abar, subset=subset, mask_threshold=THETA,
                                    mask_impl="dense", chunk_size=None)
  for name in ("support", "effective_size", "tail_mass", "masked_tail_mass"):
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6)


def test_posterior_concentrates_as_noise_falls(setup):
  stats = setup[0]
  sizes = []
  for t in (900, 500, 100):
    x, abar = _x(setup, t)
    sizes.append(np.asarray(diagnostics.posterior_support(stats, x, abar, chunk_size=16)
                            ["effective_size"]))
  assert np.all(sizes[0] > sizes[1]) and np.all(sizes[1] >= sizes[2])
  assert np.all(sizes[0] > 0.9 * N) and np.all(sizes[2] < 1.5)


def test_golddiff_support_reports_its_subset(setup):
  stats = setup[0]
  x, abar = _x(setup, 300)
  out = diagnostics.golddiff_support(stats, x, abar, jax.random.key(0), k_min=12, k_max=12,
                                     low_res_dim=4, mask_impl="dense", subset_chunk_size=16)
  assert out["subset"].shape == (B, 12) and out["k"] == 12 and 12 <= out["m"] <= N
  assert out["masked_tail_mass"].shape == (B, stats.dim)
  assert np.all((np.asarray(out["tail_mass"]) >= 0) & (np.asarray(out["tail_mass"]) <= 1))


def test_bad_mass(setup):
  stats = setup[0]
  x, abar = _x(setup, 300)
  with pytest.raises(ValueError, match="mass"):
    diagnostics.posterior_support(stats, x, abar, mass=0.0)
