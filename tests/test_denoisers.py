"""Analytical denoisers (docs/method.md §5.1–5.3) against float64 NumPy references, via gd.denoise
(NHWC) and via golddiff_jax.denoisers.<method>.apply.

Tolerances: for t ≥ 100 the logits are O(1e2–1e3) and float32 evaluation agrees with the float64
reference to rtol 1e-4 / atol 1e-5 in x̂_0 space. At t = 0 (σ² = 1e−4) the logits reach ~1e4–1e6:
a float32 rounding of 1e−6 in a squared distance moves a logit by ~1e−2, so where two candidates
nearly tie the weights can move by ~1% and the tolerance is loosened to atol 2e−2.
"""

import jax
import numpy as np
import pytest

import golddiff_jax as gd
import reference as ref
from golddiff_jax import masks, softmax
from golddiff_jax.data import procedural_images
from golddiff_jax.denoisers import optimal as optimal_mod
from golddiff_jax.denoisers import pca_locality as pca_mod
from golddiff_jax.denoisers import wiener as wiener_mod

RTOL, ATOL = 1e-4, 1e-5
DATASETS = {  # name -> (N, H, W, C, B)
    "gray8x8": (120, 8, 8, 1, 3),
    "rgb6x5": (90, 6, 5, 3, 5),
}
_CACHE = {}


def _data(name):
  """(images [N,H,W,C], stats, held-out clean images [B, D])."""
  if name not in _CACHE:
    n, h, w, c, b = DATASETS[name]
    images = procedural_images(n, h, w, c, seed=2)
    held_out = procedural_images(b, h, w, c, seed=99).reshape(b, -1).astype(np.float64)
    _CACHE[name] = (images, gd.fit(images), held_out)
  return _CACHE[name]


def _noisy(name, t, seed=0):
  """x_t = a_t x_0 + σ_t ε for held-out x_0: [B, D] float32 and the same as NHWC."""
  images, _, x0 = _data(name)
  abar = ref.ABAR[t]
  rng = np.random.default_rng(seed + t)
  x_t = (np.sqrt(abar) * x0 + np.sqrt(1 - abar) * rng.normal(size=x0.shape)).astype(np.float32)
  return x_t, x_t.reshape(x_t.shape[0], *images.shape[1:])


def _denoise(name, t, method, **options):
  images, stats, _ = _data(name)
  x_t, x_nhwc = _noisy(name, t)
  out = np.asarray(gd.denoise(stats, x_nhwc, t, method=method, **options))
  assert out.shape == x_nhwc.shape
  assert np.all(np.isfinite(out))
  return x_t, out.reshape(out.shape[0], -1)


def _mask(name, t, theta=0.05):
  _, stats, _ = _data(name)
  return np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], theta))


def _db(name):
  return ref.flatten(_data(name)[0])


# ------------------------------------------------------------------------------------------------
# Optimal (docs/method.md §5.1)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("t", [900, 500, 100])
def test_optimal_matches_reference(name, t):
  x_t, got = _denoise(name, t, "optimal")
  want = ref.optimal(_db(name), x_t, ref.ABAR[t])
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", DATASETS)
def test_optimal_apply_directly(name):
  _, stats, _ = _data(name)
  t = 300
  x_t, _ = _noisy(name, t)
  plan = optimal_mod.prepare(stats, ref.ABAR[t], optimal_mod.Options(), x_t.shape[0])
  got = np.asarray(jax.jit(optimal_mod.apply)(stats, plan, x_t))
  np.testing.assert_allclose(got, ref.optimal(_db(name), x_t, ref.ABAR[t]), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", DATASETS)
def test_optimal_temperature(name):
  t, temp = 200, 2.5
  x_t, got = _denoise(name, t, "optimal", temperature=temp)
  want = ref.optimal(_db(name), x_t, ref.ABAR[t], temperature=temp)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  plain = ref.optimal(_db(name), x_t, ref.ABAR[t])
  assert np.abs(plain - want).max() > 1e-2  # the option really changes the estimate


@pytest.mark.parametrize("chunk_size", [1, 7])
def test_optimal_chunk_size_invariance(chunk_size):
  name = "rgb6x5"
  _, base = _denoise(name, 100, "optimal")
  _, got = _denoise(name, 100, "optimal", chunk_size=chunk_size)
  np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-5)  # float32 summation order only


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("t", [0, 1])
def test_optimal_small_t_returns_nearest_training_image(name, t):
  images, stats, _ = _data(name)
  db = _db(name)
  rng = np.random.default_rng(t)
  pick = rng.choice(len(db), size=3, replace=False)
  x_t = np.sqrt(ref.ABAR[t]) * db[pick] + 1e-3 * rng.normal(size=(3, db.shape[1]))
  out = np.asarray(gd.denoise(stats, x_t.reshape(3, *images.shape[1:]).astype(np.float32), t,
                              method="optimal")).reshape(3, -1)
  np.testing.assert_allclose(out, db[pick], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", DATASETS)
def test_optimal_t0_near_tie(name):
  """x_t halfway between two training images at t = 0: weights are not one-hot; loose tolerance."""
  images, stats, _ = _data(name)
  db = _db(name)
  a = np.sqrt(ref.ABAR[0])
  rng = np.random.default_rng(5)
  mid = 0.5 * a * (db[[3, 10, 20]] + db[[4, 11, 21]]) + 1e-4 * rng.normal(size=(3, db.shape[1]))
  mid = mid.astype(np.float32)
  out = np.asarray(gd.denoise(stats, mid.reshape(3, *images.shape[1:]), 0,
                              method="optimal")).reshape(3, -1)
  want = ref.optimal(db, mid, ref.ABAR[0])
  logits = ref.optimal_logits(db, mid, ref.ABAR[0])
  assert np.abs(logits).max() > 1e4
  np.testing.assert_allclose(out, want, rtol=0, atol=2e-2)


# ------------------------------------------------------------------------------------------------
# Wiener (docs/method.md §5.2)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("t", [900, 500, 100, 0])
def test_wiener_matches_gaussian_posterior_mean(name, t):
  x_t, got = _denoise(name, t, "wiener")
  want = ref.wiener(_db(name), x_t, ref.ABAR[t])
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_wiener_apply_directly_and_leaves_box():
  name = "gray8x8"
  _, stats, _ = _data(name)
  t = 100
  rng = np.random.default_rng(1)
  x_t = rng.normal(size=(3, stats.dim)).astype(np.float32) * 3.0  # far from the data
  plan = wiener_mod.prepare(stats, ref.ABAR[t], wiener_mod.Options(), 3)
  got = np.asarray(jax.jit(wiener_mod.apply)(stats, plan, x_t))
  want = ref.wiener(_db(name), x_t, ref.ABAR[t])
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  assert np.abs(want).max() > 1.0  # not a convex combination: leaves [−1, 1]


# ------------------------------------------------------------------------------------------------
# PCA-locality (docs/method.md §5.3)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("t", [500, 100])
def test_pca_locality_impls_match_reference(name, t):
  x_t = _noisy(name, t)[0]
  want = ref.pca_locality(_db(name), x_t, ref.ABAR[t], _mask(name, t))
  results = {}
  for impl in ("dense", "bf16x3", "sparse", "tiled"):
    _, results[impl] = _denoise(name, t, "pca_locality", mask_impl=impl, mask_tile=2)
    np.testing.assert_allclose(results[impl], want, rtol=RTOL, atol=ATOL, err_msg=impl)
  for impl in ("bf16x3", "sparse", "tiled"):
    np.testing.assert_allclose(results[impl], results["dense"], rtol=1e-5, atol=5e-6,
                               err_msg=impl)
  _, auto = _denoise(name, t, "pca_locality")
  np.testing.assert_allclose(auto, results["dense"], rtol=1e-5, atol=5e-6)


@pytest.mark.parametrize("name", DATASETS)
def test_pca_locality_contracts_over_row_index(name):
  """dist = delta @ M (docs/method.md §5.3); the transposed mask gives a measurably different
  estimator."""
  t = 100
  mask = _mask(name, t)
  assert np.sum(mask != mask.T) > 0
  x_t, got = _denoise(name, t, "pca_locality", mask_impl="dense")
  right = ref.pca_locality(_db(name), x_t, ref.ABAR[t], mask)
  wrong = ref.pca_locality(_db(name), x_t, ref.ABAR[t], mask.T)
  np.testing.assert_allclose(got, right, rtol=RTOL, atol=ATOL)
  assert np.abs(wrong - right).max() > 1e-3
  assert np.abs(got - wrong).max() > 1e-3


@pytest.mark.parametrize("name,impl", [("gray8x8", "sparse"), ("rgb6x5", "dense")])
def test_pca_locality_apply_directly(name, impl):
  _, stats, _ = _data(name)
  t = 200
  x_t, _ = _noisy(name, t)
  options = pca_mod.Options(mask_threshold=0.1, mask_impl=impl)
  plan = pca_mod.prepare(stats, ref.ABAR[t], options, x_t.shape[0])
  assert plan.impl == impl
  got = np.asarray(jax.jit(pca_mod.apply)(stats, plan, x_t))
  want = ref.pca_locality(_db(name), x_t, ref.ABAR[t], _mask(name, t, 0.1))
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("impl", ["dense", "tiled"])
@pytest.mark.parametrize("name", DATASETS)
def test_pca_locality_t0_loose(name, impl):
  """Also for the tiled form's expanded distance (Σ M x² − 2a Σ M x y + a² Σ M y²)."""
  x_t, got = _denoise(name, 0, "pca_locality", mask_impl=impl, mask_tile=2)
  want = ref.pca_locality(_db(name), x_t, ref.ABAR[0], _mask(name, 0))
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-2)


@pytest.mark.parametrize("impl", ["dense", "tiled"])
@pytest.mark.parametrize("name,chunk", [("gray8x8", 16), ("rgb6x5", 16), ("rgb6x5", 37)])
def test_pca_locality_wssm(name, chunk, impl):
  """WSSM over contiguous chunks (the last one partial: 120 = 7·16 + 8, 90 = 5·16 + 10,
  90 = 2·37 + 16) is the mean of per-chunk posterior means, and differs from the exact softmax."""
  t = 100
  x_t, got = _denoise(name, t, "pca_locality", softmax="wssm", wssm_chunk=chunk,
                      mask_impl=impl, mask_tile=3)
  logits = ref.pca_logits(_db(name), x_t, ref.ABAR[t], _mask(name, t))
  want = ref.wssm_mean(logits, _db(name), chunk)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  exact = ref.softmax_mean(logits, _db(name))
  assert np.abs(exact - want).max() > 1e-3


@pytest.mark.parametrize("name", DATASETS)
def test_pca_locality_wssm_single_chunk_is_exact(name):
  t = 300
  n = DATASETS[name][0]
  x_t, got = _denoise(name, t, "pca_locality", softmax="wssm", wssm_chunk=n + 5)
  _, exact = _denoise(name, t, "pca_locality")
  want = ref.pca_locality(_db(name), x_t, ref.ABAR[t], _mask(name, t))
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(got, exact, rtol=1e-5, atol=5e-6)


@pytest.mark.parametrize("name", DATASETS)
def test_pca_locality_temperature(name):
  t, temp = 200, 0.4
  x_t, got = _denoise(name, t, "pca_locality", temperature=temp, mask_impl="dense")
  mask = _mask(name, t)
  want = ref.pca_locality(_db(name), x_t, ref.ABAR[t], mask, temperature=temp)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  plain = ref.pca_locality(_db(name), x_t, ref.ABAR[t], mask)
  assert np.abs(plain - want).max() > 1e-2


@pytest.mark.parametrize("chunk_size", [1, 13])
def test_pca_locality_chunk_size_invariance(chunk_size):
  name = "rgb6x5"
  _, base = _denoise(name, 100, "pca_locality", mask_impl="dense")
  _, got = _denoise(name, 100, "pca_locality", mask_impl="dense", chunk_size=chunk_size)
  np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-5)  # float32 summation order only


@pytest.mark.parametrize("theta", [0.01, 0.3])
def test_pca_locality_threshold_option(theta):
  """mask_threshold is honoured: a denser (θ = 0.01) and a sparser (θ = 0.3) mask than default."""
  name = "gray8x8"
  t = 100
  x_t, got = _denoise(name, t, "pca_locality", mask_threshold=theta, mask_impl="dense")
  mask = _mask(name, t, theta)
  want = ref.pca_locality(_db(name), x_t, ref.ABAR[t], mask)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
  default = ref.pca_locality(_db(name), x_t, ref.ABAR[t], _mask(name, t))
  assert np.abs(default - want).max() > 1e-3


def test_auto_mask_impl_is_dense_unless_the_mask_is_too_large(monkeypatch):
  """`auto` keeps the dense GEMM (the measured winner on CPU) and switches to the index-list form
  only when a [D, D] float32 mask would exceed DENSE_MASK_MAX_BYTES."""
  pca_locality = pca_mod
  assert pca_locality.choose_impl("auto", 3072) == "dense"
  for impl in ("dense", "bf16x3", "sparse"):
    assert pca_locality.choose_impl(impl, 3072) == impl
  monkeypatch.setattr(pca_locality, "DENSE_MASK_MAX_BYTES", 4 * 100 * 100 - 1)
  assert pca_locality.choose_impl("auto", 100) == "sparse"
  assert pca_locality.choose_impl("auto", 99) == "dense"
  mask = np.eye(100, dtype=np.float32)
  plan = pca_locality.build_plan(mask, 0.5, 2, mask_impl="auto", temperature=1.0)
  assert plan.impl == "sparse" and plan.mask is None and plan.index.shape == (100, 1)


@pytest.mark.parametrize("name,tile", [("gray8x8", 3), ("rgb6x5", 2), ("rgb6x5", 8)])
@pytest.mark.parametrize("t", [900, 300])
def test_tiled_continues_a_state_and_skips_invalid_rows(name, tile, t):
  """The tiled form folds candidates into a state given in the natural layout (as the sharded
  merge does) and honours ``row_valid``: two halves, one with masked rows, equal one pass."""
  _, stats, _ = _data(name)
  x_t, _ = _noisy(name, t)
  options = pca_mod.Options(mask_impl="tiled", mask_tile=tile, chunk_size=16)
  plan = pca_mod.prepare(stats, ref.ABAR[t], options, x_t.shape[0])
  assert plan.impl == "tiled"
  db = stats.database
  n = db.shape[0]
  keep = np.random.default_rng(t).uniform(size=n) < 0.7
  first = pca_mod.apply_to_candidates(db[: n // 2], plan, x_t, row_valid=keep[: n // 2])
  both = pca_mod.apply_to_candidates(db[n // 2:], plan, x_t, state=first,
                                     row_valid=keep[n // 2:])
  want = ref.pca_locality(_db(name)[keep], x_t, ref.ABAR[t], _mask(name, t))
  np.testing.assert_allclose(np.asarray(softmax.finalize(both)), want, rtol=RTOL, atol=ATOL)


def test_auto_picks_tiled_for_local_masks_only(monkeypatch):
  """`auto`: tiled when the tiled form costs ≤ TILED_MAX_RATIO of the dense product and its
  weights fit; dense otherwise, and always dense without an image shape (GoldDiff's subsets)."""
  shape, batch = (8, 8, 3), 4
  d = int(np.prod(shape))
  local, full = np.eye(d, dtype=np.float32), np.ones((d, d), np.float32)
  opts = {"mask_impl": "auto", "temperature": 1.0}
  assert pca_mod.build_plan(local, 0.5, batch, **opts, image_shape=shape).impl == "tiled"
  assert pca_mod.build_plan(full, 0.5, batch, **opts, image_shape=shape).impl == "dense"
  assert pca_mod.build_plan(local, 0.5, batch, **opts).impl == "dense"
  form = masks.tiled_form(local, shape, pca_mod.Options().mask_tile)
  assert form.cost_ratio <= pca_mod.TILED_MAX_RATIO
  assert pca_mod.choose_impl("auto", d, form, batch) == "tiled"
  monkeypatch.setattr(pca_mod, "TILED_MAX_BYTES", 4 * batch * form.sub.size - 1)
  assert pca_mod.choose_impl("auto", d, form, batch) == "dense"  # its weights would not fit
  monkeypatch.undo()
  with pytest.raises(ValueError, match="tiled"):
    pca_mod.build_plan(local, 0.5, batch, **{**opts, "mask_impl": "tiled"})
  with pytest.raises(ValueError, match="mask_tile"):
    pca_mod.Options(mask_tile=0)
  with pytest.raises(ValueError, match="mask_impl"):
    _, stats, _ = _data("rgb6x5")
    gd.denoise(stats, np.zeros((1, 6, 5, 3), np.float32), 100, method="golddiff",
               mask_impl="tiled")
