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
  return golddiff.prepare(stats, schedules.alpha_bar(t), golddiff.Options(**options), batch)


def _exact(stats, t, x, theta=THETA):
  options = pca_locality.Options(mask_threshold=theta, mask_impl="dense")
  return _pca(stats, pca_locality.prepare(stats, schedules.alpha_bar(t), options, x.shape[0]), x)


COMMON = dict(k_min=6, k_max=24, mask_threshold=THETA, low_res_dim=4, mask_impl="dense")


@pytest.mark.parametrize("mask_impl, theta, timesteps", [
    ("dense", THETA, (900, 300, 100)),
    ("sparse", 0.3, (100,)),  # a mask sparse enough for the gather-sum form (≤ 7 inputs)
])
def test_full_budget_equals_pca_locality(setup, mask_impl, theta, timesteps):
  """k_min = k_max = N (so m_t = N) with exact selection reproduces the full-scan estimator."""
  stats = setup[0]
  for t in timesteps:
    x = _noisy(setup, t)
    plan = _plan(stats, t, **{**COMMON, "k_min": N, "k_max": N, "mask_impl": mask_impl,
                              "mask_threshold": theta})
    assert (plan.m, plan.k, plan.locality.impl) == (N, N, mask_impl)
    got = _apply(stats, plan, x, jax.random.key(t))
    np.testing.assert_allclose(got, _exact(stats, t, x, theta), atol=5e-5, rtol=0)


def test_error_shrinks_as_k_grows(setup):
  stats = setup[0]
  t = 300
  x = _noisy(setup, t)
  exact = _exact(stats, t, x)
  errors = []
  for k in (4, 20, N):
    plan = _plan(stats, t, **{**COMMON, "k_min": k, "k_max": k})
    errors.append(float(jnp.mean(jnp.abs(_apply(stats, plan, x, jax.random.key(1)) - exact))))
  assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5, errors


def test_truncation_bound_per_coordinate(setup):
  """|x̂[m] − x̂_S[m]| ≤ 2 ε_S[m] with ε_S[m] the full-scan tail mass
  (docs/method.md §11 item 2)."""
  stats = setup[0]
  t = 300
  x = _noisy(setup, t)
  key = jax.random.key(7)
  report = diagnostics.golddiff_support(stats, x, schedules.alpha_bar(t), key, **COMMON)
  x_s = _apply(stats, _plan(stats, t, **COMMON), x, key)
  gap = np.abs(np.asarray(x_s) - np.asarray(_exact(stats, t, x)))
  tail = np.asarray(report["masked_tail_mass"])
  assert np.all(gap <= 2 * tail + 2e-5)
  assert gap.max() > 1e-4  # the subset really truncates something here


def test_keys_select_the_pool(setup):
  """Same key → same golden subset; another key → another random pool (t = 300: m_t < N)."""
  stats = setup[0]
  t = 300
  x = _noisy(setup, t)
  abar = schedules.alpha_bar(t)
  a = diagnostics.golddiff_support(stats, x, abar, jax.random.key(7), **COMMON)
  b = diagnostics.golddiff_support(stats, x, abar, jax.random.key(8), **COMMON)
  again = diagnostics.golddiff_support(stats, x, abar, jax.random.key(7), **COMMON)
  assert a["m"] < N and a["subset"].shape == (8, a["k"])
  np.testing.assert_array_equal(a["subset"], again["subset"])
  assert any(set(r) != set(s) for r, s in zip(np.asarray(a["subset"]), np.asarray(b["subset"])))


def test_sampling_is_deterministic_and_does_not_recompile(setup):
  stats = setup[0]
  latents = setup[2][:4].reshape(4, 8, 8, 3)
  first = gd.sample(stats, latents, method="golddiff", num_steps=1, key=jax.random.key(0),
                    **COMMON)
  cache = sampler._step._cache_size()
  again = gd.sample(stats, latents, method="golddiff", num_steps=1, key=jax.random.key(0),
                    **COMMON)
  np.testing.assert_array_equal(first.images, again.images)
  gd.sample(stats, latents[::-1] * 0.5, method="golddiff", num_steps=1, key=jax.random.key(1),
            **COMMON)
  assert sampler._step._cache_size() == cache  # same shapes: nothing recompiled


def test_chunk_sizes_do_not_change_the_answer(setup):
  stats = setup[0]
  t = 300
  x = _noisy(setup, t)
  key = jax.random.key(7)
  ref = _apply(stats, _plan(stats, t, **COMMON), x, key)
  got = _apply(stats, _plan(stats, t, **COMMON, chunk_size=7, subset_chunk_size=5), x, key)
  np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)


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


def test_random_retrieval_and_bilinear_proxy(setup):
  stats = setup[0]
  x = _noisy(setup, 300, 4)
  plan = _plan(stats, 300, 4, k_min=5, k_max=10, random_retrieval=True)
  assert plan.proxy_db is None
  subset = np.asarray(_golden_subset(stats, plan, x, jax.random.key(0)))
  assert subset.shape == (4, plan.k) and all(len(set(r)) == plan.k for r in subset)
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
    (dict(mask_threshold=0.0), "mask_threshold"),
    (dict(proxy_upsample_mode="nearest"), "proxy_upsample_mode"),
    (dict(proxy_repeat_factor=2, proxy_upsample_mode="bilinear"), "perfect square"),
    (dict(k_neighbors=5), "unknown option"),
])
def test_bad_options_raise(setup, options, message):
  stats = setup[0]
  x = np.zeros((2, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match=message):
    gd.denoise(stats, x, 500, method="golddiff", **options)


def test_proxy_database_is_average_pooling(setup, monkeypatch):
  stats = setup[0]
  monkeypatch.setattr(golddiff, "_SCAN_BYTES", 4 * stats.dim * 7)  # blocks of 7 rows
  proxy, proxy_sq = golddiff.build_proxy(stats, ("pool", 4, 4))
  images = np.asarray(stats.database).reshape(N, 4, 2, 4, 2, 3)
  expected = images.mean(axis=(2, 4)).reshape(N, 48)
  np.testing.assert_allclose(proxy, expected, atol=1e-6)
  np.testing.assert_allclose(proxy_sq, (expected.astype(np.float64) ** 2).sum(1), rtol=1e-5)


def test_size_bucket_equals_per_step_plans(setup):
  """A run's plans share one subset width K = max k_t (entries past k_t masked): every step's
  x̂_0 equals the one from its own unpadded plan, on one device and sharded over 8."""
  stats = setup[0]
  timesteps = schedules.ddim_timesteps(10)
  abars = [schedules.alpha_bar(t) for t in timesteps]
  options = golddiff.Options(**COMMON)
  plans = golddiff.prepare_run(stats, abars, options, 8)
  assert {p.size for p in plans} == {24} and plans[0].ranked and plans[0].pool
  mesh = gd.make_mesh(data=8, batch=1)
  sharded = gd.shard_stats(stats, mesh)
  apply_sharded = jax.jit(golddiff.apply_sharded, static_argnums=(4,))
  ks = set()
  for t, abar, plan in zip(timesteps, abars, plans):
    x = _noisy(setup, t)
    key = jax.random.key(int(t))
    alone = golddiff.prepare(stats, abar, options, 8)
    assert alone.size == int(alone.k) == int(plan.k) and not alone.ranked
    ks.add(int(plan.k))
    want = np.asarray(_apply(stats, alone, x, key))
    # At t = 0 the logits are scaled by 1/(2σ²) = 5000: float32 rounding of the distances (which
    # depends on the GEMM's row count) moves x̂_0 by up to ~1e-3 there.
    atol = 2e-5 if t > 0 else 5e-3
    np.testing.assert_allclose(_apply(stats, plan, x, key), want, atol=atol, rtol=0)
    np.testing.assert_allclose(apply_sharded(sharded, plan, x, key, mesh), want, atol=atol,
                               rtol=0)
  assert len(ks) > 3  # the schedule really has several k_t


def test_ten_step_run_traces_one_step_function(setup, monkeypatch):
  """m_t and k_t are traced, so a 10-step run traces (and compiles) the step once, not 10×."""
  stats = setup[0]
  latents = setup[2][:3].reshape(3, 8, 8, 3)
  traces = []
  original = golddiff.apply

  def counting_apply(*args, **kwargs):
    traces.append(1)
    return original(*args, **kwargs)

  monkeypatch.setitem(gd.METHODS, "golddiff", gd.METHODS["golddiff"].replace(apply=counting_apply))
  out = gd.sample(stats, latents, method="golddiff", num_steps=10, key=jax.random.key(3),
                  **{**COMMON, "k_min": 5})  # B = 3 and k_min = 5: shapes unique to this test
  assert 1 <= len(traces) <= 3, len(traces)
  assert np.isfinite(out.images).all()


def test_expansion_steps_and_auto_index_lists(setup, monkeypatch):
  """high_noise='expansion' answers the steps with ᾱ_t ≤ high_noise_abar in closed form (the
  rest retrieve as before); auto uses index lists where the mask is local, with the same result
  as the dense product; a 10-step run with all three step kinds traces at most 3 functions."""
  from golddiff_jax import high_noise
  stats = setup[0]
  # This tiny database's masks are 71–86% dense; let the two least dense steps (longest
  # columns 156 and 148 of D = 192) take index lists of one padded width.
  monkeypatch.setattr(golddiff, "SPARSE_MAX_RATIO", 0.82)
  timesteps = schedules.ddim_timesteps(10)
  abars = [schedules.alpha_bar(t) for t in timesteps]
  options = golddiff.Options(**{**COMMON, "mask_impl": "auto", "high_noise": "expansion",
                                "high_noise_abar": 0.002})
  plans = golddiff.prepare_run(stats, abars, options, 8)
  kinds = ["expansion" if p.expansion is not None else p.locality.impl for p in plans]
  assert kinds == ["expansion"] * 2 + ["dense"] * 6 + ["sparse"] * 2, kinds
  assert plans[-1].locality.index.shape == plans[-2].locality.index.shape == (stats.dim, 156)
  dense = golddiff.prepare_run(stats, abars, options.replace(mask_impl="dense",
                                                             high_noise="pool"), 8)
  moments = high_noise.database_moments(stats.database)
  for t, abar, plan, ref, kind in zip(timesteps, abars, plans, dense, kinds):
    x = _noisy(setup, t)
    key = jax.random.key(int(t))
    got = _apply(stats, plan, x, key)
    if kind == "expansion":
      mask = golddiff.masks.mask_for(stats, abar, options.mask_variant())
      want = high_noise.apply(high_noise.prepare(moments, mask, abar), x)
    else:
      want = _apply(stats, ref, x, key)
    # Index lists sum in another order than the GEMM: float32 rounding, amplified by the logit
    # scale 1/(2σ²) (4.8 at t = 100, 5000 at t = 0).
    atol = {"expansion": 2e-5, "dense": 2e-5, "sparse": 2e-4}[kind] if t > 0 else 5e-3
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)
  traces = []
  original = golddiff.apply
  monkeypatch.setitem(gd.METHODS, "golddiff", gd.METHODS["golddiff"].replace(
      apply=lambda *a, **k: traces.append(1) or original(*a, **k)))
  latents = setup[2][:5].reshape(5, 8, 8, 3)  # B = 5: shapes unique to this test
  gd.sample(stats, latents, method="golddiff", num_steps=10, key=jax.random.key(0),
            **{**COMMON, "mask_impl": "auto", "high_noise": "expansion"})
  assert len(traces) <= 3, len(traces)


def test_expansion_only_replaces_a_random_pool(setup):
  """Not used when the pool is all N (k_max = N: exact) nor in the random-retrieval ablation."""
  stats = setup[0]
  abar = schedules.alpha_bar(900)
  assert _plan(stats, 900, **COMMON).expansion is not None
  assert _plan(stats, 900, **{**COMMON, "k_min": N, "k_max": N}).expansion is None
  assert _plan(stats, 900, **COMMON, random_retrieval=True).expansion is None
  assert _plan(stats, 900, **COMMON, high_noise="pool").expansion is None
  assert abar <= golddiff.Options().high_noise_abar < schedules.alpha_bar(700)


def test_high_noise_options_raise(setup):
  stats = setup[0]
  x = np.zeros((2, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match="high_noise must be one of"):
    gd.denoise(stats, x, 900, method="golddiff", high_noise="taylor")
  with pytest.raises(ValueError, match="high_noise_abar"):
    gd.denoise(stats, x, 900, method="golddiff", high_noise_abar=1.5)


@pytest.mark.parametrize("channels", [1, 3])
def test_index_lists_equal_the_dense_product_sharded_or_not(channels):
  """GoldDiff's per-output index lists (each output reads only its own inputs) give the dense
  masked product's samples, on 1- and 3-channel images, on one device and on a 4×2 mesh."""
  images = procedural_images(N, 8, 8, channels, seed=int(np.random.default_rng().integers(99)))
  stats = gd.fit(images)
  latents = gd.noise(jax.random.key(channels), 4, stats.image_shape)
  options = dict(k_min=6, k_max=24, mask_threshold=0.3, low_res_dim=4, high_noise="pool",
                 num_steps=2, key=jax.random.key(5))
  dense = gd.sample(stats, latents, method="golddiff", mask_impl="dense", **options)
  sparse = gd.sample(stats, latents, method="golddiff", mask_impl="sparse", **options)
  mesh = gd.make_mesh(data=4, batch=2)
  sharded = gd.sample(gd.shard_stats(stats, mesh), latents, method="golddiff",
                      mask_impl="sparse", **options)
  for got in (sparse, sharded):
    # t = 500, then t = 0 where the logit scale 1/(2σ²) ≈ 5000 amplifies float32 rounding.
    np.testing.assert_allclose(got.x0_trajectory[0], dense.x0_trajectory[0], atol=2e-4, rtol=0)
    np.testing.assert_allclose(got.x0_trajectory[1], dense.x0_trajectory[1], atol=5e-3, rtol=0)
