"""GoldDiff denoiser: convergence to PCA-locality, truncation bound, keys, compiles, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golddiff_jax as gd
from golddiff_jax import diagnostics, retrieval, sampler, schedules
from golddiff_jax.data import procedural_images
from golddiff_jax.denoisers import golddiff, pca_locality

N = 80
THETA = 0.03
_golden_subset = jax.jit(golddiff.golden_subset)
_apply = jax.jit(golddiff.apply)
_pca = jax.jit(pca_locality.apply)


@pytest.fixture(scope="module")
def setup():
  images = procedural_images(N + 8, 8, 8, 3, seed=3)
  stats = gd.fit(images[:N])
  noise = np.asarray(gd.noise(jax.random.key(0), 8, stats.image_shape)).reshape(8, -1)
  return stats, images[N:].reshape(8, -1), noise


def _noisy(setup, t, batch=8):
  _, clean, noise = setup
  abar = schedules.alpha_bar(t)
  return jnp.asarray(np.sqrt(abar) * clean[:batch] + np.sqrt(1 - abar) * noise[:batch])


def _plan(stats, t, batch=8, **options):
  return golddiff.prepare(stats, schedules.alpha_bar(t), {**golddiff.OPTIONS, **options}, batch)


def _exact(stats, t, x, mask_impl="dense"):
  options = {**pca_locality.OPTIONS, "mask_threshold": THETA, "mask_impl": mask_impl}
  return _pca(stats, pca_locality.prepare(stats, schedules.alpha_bar(t), options, x.shape[0]), x)


@pytest.mark.parametrize("mask_impl", ["dense", "sparse"])
def test_full_budget_equals_pca_locality(setup, mask_impl):
  """k_min = k_max = N (so m_t = N) with exact selection reproduces the full-scan estimator."""
  stats = setup[0]
  for t in (900, 300, 100):
    x = _noisy(setup, t)
    plan = _plan(stats, t, k_min=N, k_max=N, mask_threshold=THETA, mask_impl=mask_impl,
                 low_res_dim=4)
    assert (plan.m, plan.k) == (N, N)
    got = _apply(stats, plan, x, jax.random.key(t))
    np.testing.assert_allclose(got, _exact(stats, t, x), atol=2e-5, rtol=0)


def test_error_shrinks_as_k_grows(setup):
  stats = setup[0]
  t = 300
  x = _noisy(setup, t)
  exact = _exact(stats, t, x)
  errors = []
  for k in (4, 20, N):
    plan = _plan(stats, t, k_min=k, k_max=k, mask_threshold=THETA, low_res_dim=4,
                 mask_impl="dense")
    errors.append(float(jnp.mean(jnp.abs(_apply(stats, plan, x, jax.random.key(1)) - exact))))
  assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5, errors


@pytest.mark.parametrize("t", [500, 300])
def test_truncation_bound_per_coordinate(setup, t):
  """|x̂[m] − x̂_S[m]| ≤ 2 ε_S[m] with ε_S[m] the full-scan tail mass (spec §11 item 2)."""
  stats = setup[0]
  x = _noisy(setup, t)
  options = dict(k_min=6, k_max=24, mask_threshold=THETA, low_res_dim=4, mask_impl="dense")
  key = jax.random.key(7)
  report = diagnostics.golddiff_support(stats, x, schedules.alpha_bar(t), key, **options)
  x_s = _apply(stats, _plan(stats, t, **options), x, key)
  gap = np.abs(np.asarray(x_s) - np.asarray(_exact(stats, t, x)))
  tail = np.asarray(report["masked_tail_mass"])
  assert np.all(gap <= 2 * tail + 2e-5)
  assert gap.max() > 1e-4  # the subset really truncates something here


def test_keys_determinism_and_no_recompile(setup):
  stats = setup[0]
  options = dict(k_min=8, k_max=16, mask_threshold=THETA, low_res_dim=4)
  latents = setup[2][:4].reshape(4, 8, 8, 3)
  first = gd.sample(stats, latents, method="golddiff", num_steps=2, key=jax.random.key(0),
                    **options)
  cache = sampler._step._cache_size()
  again = gd.sample(stats, latents, method="golddiff", num_steps=2, key=jax.random.key(0),
                    **options)
  np.testing.assert_array_equal(first.x0_trajectory, again.x0_trajectory)
  other = gd.sample(stats, latents[::-1], method="golddiff", num_steps=2,
                    key=jax.random.key(1), **options)
  assert sampler._step._cache_size() == cache  # same shapes: nothing recompiled
  assert not np.array_equal(first.x0_trajectory[0], other.x0_trajectory[0][::-1])


def test_different_keys_draw_different_pools(setup):
  stats = setup[0]
  x = _noisy(setup, 900, 4)
  plan = _plan(stats, 900, 4, k_min=8, k_max=16, low_res_dim=4)
  a = np.asarray(_golden_subset(stats, plan, x, jax.random.key(0)))
  b = np.asarray(_golden_subset(stats, plan, x, jax.random.key(1)))
  np.testing.assert_array_equal(a, np.asarray(_golden_subset(stats, plan, x, jax.random.key(0))))
  assert a.shape == (4, plan.k)
  assert any(set(r) != set(s) for r, s in zip(a, b))


def test_repeat_proxy_with_full_pool_is_exact_knn(setup):
  """ρ-repeat proxy ranks like the full distance, so with m = N, S_t = the k nearest in L2."""
  stats = setup[0]
  t = 100
  x = _noisy(setup, t, 4)
  plan = _plan(stats, t, 4, k_min=3, k_max=12, dynamic_m=False, static_m=N,
               proxy_repeat_factor=4)
  got = np.asarray(_golden_subset(stats, plan, x, jax.random.key(0)))
  db = np.asarray(stats.database, np.float64)
  dist = ((np.asarray(x)[:, None] - np.sqrt(schedules.alpha_bar(t)) * db[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(np.sort(got, 1), np.sort(np.argsort(dist, 1)[:, :plan.k], 1))


def test_options_do_not_change_the_answer(setup):
  """Chunk sizes and the sort-free selection give the same x̂_0 as the defaults."""
  stats = setup[0]
  t = 200
  x = _noisy(setup, t, 4)
  base = dict(k_min=10, k_max=30, mask_threshold=THETA, low_res_dim=4, mask_impl="dense")
  key = jax.random.key(3)
  ref = _apply(stats, _plan(stats, t, 4, **base), x, key)
  for extra in (dict(chunk_size=7, subset_chunk_size=5), dict(select="threshold")):
    got = _apply(stats, _plan(stats, t, 4, **base, **extra), x, key)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)


def test_random_retrieval_and_bilinear_proxy_run(setup):
  stats = setup[0]
  x = _noisy(setup, 300, 4)
  plan = _plan(stats, 300, 4, k_min=5, k_max=10, random_retrieval=True)
  subset = np.asarray(_golden_subset(stats, plan, x, jax.random.key(0)))
  assert subset.shape == (4, plan.k) and all(len(set(r)) == plan.k for r in subset)
  out = np.asarray(_apply(stats, plan, x, jax.random.key(0)))
  assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0 + 1e-6
  plan = _plan(stats, 300, 4, k_min=5, k_max=10, proxy_repeat_factor=4,
               proxy_upsample_mode="bilinear")
  assert plan.proxy_db.shape == (N, 4 * stats.dim)
  assert np.asarray(_golden_subset(stats, plan, x, jax.random.key(0))).shape == (4, plan.k)


@pytest.mark.parametrize("options, message", [
    (dict(k_min=20, k_max=10), "k_min=20 must be <= k_max=10"),
    (dict(k_max=N + 1), "exceeds the number of database images"),
    (dict(k_min=N + 1, k_max=N + 2), "exceeds the number of database images"),
    (dict(k_min=0), "k_min must be a positive int"),
    (dict(low_res_dim=-1), "low_res_dim"),
    (dict(select="heap"), "valid methods: \\['exact', 'approx', 'bucket', 'threshold'\\]"),
    (dict(recall_target=1.5), "recall_target"),
    (dict(k_max=10, dynamic_m=False, static_m=9), "Q-7"),
    (dict(static_k=3), "dynamic_k=False"),
    (dict(softmax="wssm"), "softmax='exact' only"),
    (dict(mask_impl="csr"), "mask_impl"),
    (dict(proxy_upsample_mode="nearest"), "proxy_upsample_mode"),
    (dict(proxy_repeat_factor=2, proxy_upsample_mode="bilinear"), "perfect square"),
    (dict(k_neighbors=5), "unknown option"),
])
def test_bad_options_raise(setup, options, message):
  stats = setup[0]
  x = np.zeros((2, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match=message):
    gd.denoise(stats, x, 500, method="golddiff", **options)
