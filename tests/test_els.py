"""ELS (Kamb & Ganguli) against a float64 NumPy ELS written here from the definition: for every
pixel, a softmax over explicitly cut windows of every training image at every allowed position.

Tolerances: at t ≥ 100 the logits are O(1e2) and float32 agrees with float64 to ~1e-5 in x̂_0; at
t = 0 (σ² = 1e−4) a float32 rounding of a squared window distance moves a logit by ~1e−2 (the
distance is in expanded form), so near-ties can move the weights by ~1% (atol 2e−2 there).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golddiff_jax as gd
import reference as ref
from golddiff_jax import sharding
from golddiff_jax.denoisers import els, els_golden, golddiff

SHAPES = {"gray7x6": (7, 6, 1), "rgb6x5": (6, 5, 3)}


def els_reference(x, db, abar, k, padding, temperature=1.0):
  """x [B, H, W, C], db [N, H, W, C] (float64) → x̂_0 [B, H, W, C]."""
  b, h, w, c = x.shape
  r = k // 2
  a, s2 = np.sqrt(abar), 1.0 - abar
  mode = "wrap" if padding == "circular" else "constant"
  xp = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode=mode)
  dbp = np.pad(db, ((0, 0), (r, r), (r, r), (0, 0)))

  def allowed(i, n):
    inner = list(range(r, n - r))
    if padding == "circular" or r <= i < n - r:
      return inner
    return [i]

  out = np.zeros_like(x)
  for i in range(h):
    for j in range(w):
      pos = [(u, v) for u in allowed(i, h) for v in allowed(j, w)]
      cands = np.stack([dbp[:, u:u + k, v:v + k] for u, v in pos], axis=1)  # [N, S, k, k, C]
      centres = np.stack([db[:, u, v] for u, v in pos], axis=1).reshape(-1, c)
      cands = cands.reshape(-1, k * k * c)
      for s in range(b):
        patch = xp[s, i:i + k, j:j + k].reshape(-1)
        logits = -np.sum((patch - a * cands) ** 2, axis=1) / (2 * s2 * temperature)
        p = np.exp(logits - logits.max())
        out[s, i, j] = p @ centres / p.sum()
  return out


def _data(shape, n=9, b=3, seed=0):
  rng = np.random.default_rng(seed)
  db = rng.uniform(-1, 1, size=(n, *shape))
  x0 = rng.uniform(-1, 1, size=(b, *shape))
  return db, x0, rng


def _noisy(x0, t, rng):
  abar = float(ref.ABAR[t])
  return np.sqrt(abar) * x0 + np.sqrt(1 - abar) * rng.normal(size=x0.shape), abar


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("padding", els.PADDINGS)
def test_els_matches_float64_reference(name, padding):
  shape = SHAPES[name]
  db, x0, rng = _data(shape, seed=2 * list(SHAPES).index(name) + els.PADDINGS.index(padding))
  stats = gd.fit(db.astype(np.float32))
  for k, t in ((1, 300), (3, 500), (5, 100), (3, 0)):  # abar is traced: 3 compiles
    if padding == "circular" and k > min(shape[:2]):
      continue
    x_t, abar = _noisy(x0, t, rng)
    want = els_reference(x_t, db.astype(np.float32).astype(np.float64), abar, k, padding)
    got = np.asarray(gd.denoise(stats, x_t.astype(np.float32), t, method="els", patch_size=k,
                                padding=padding, chunk_size=4))
    atol = 2e-2 if t == 0 else 2e-5
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=f"k={k} t={t}")


def test_els_large_patch_is_local_score_and_temperature():
  """k ≥ H: every row is a border row, each pixel sees only its own position (borders)."""
  db, x0, rng = _data((5, 5, 2), n=7, seed=3)
  stats = gd.fit(db.astype(np.float32))
  x_t, abar = _noisy(x0, 400, rng)
  db64 = db.astype(np.float32).astype(np.float64)
  for k in (5, 7, 11):
    want = els_reference(x_t, db64, abar, k, "borders", temperature=2.0)
    got = np.asarray(gd.denoise(stats, x_t.astype(np.float32), 400, method="els", patch_size=k,
                                temperature=2.0))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5, err_msg=f"k={k}")


def test_els_parts_cover_every_pixel_once():
  for h, w, k, padding in ((7, 6, 3, "borders"), (6, 9, 5, "borders"), (4, 4, 9, "borders"),
                           (5, 8, 3, "circular")):
    pixels = np.concatenate([p.pixels(w) for p in els.parts(h, w, k, padding)])
    assert sorted(pixels.tolist()) == list(range(h * w))


def test_els_sharded_equals_unsharded():
  db, x0, rng = _data((6, 6, 1), n=13, b=4, seed=5)
  stats = gd.fit(db.astype(np.float32))
  x_t, _ = _noisy(x0, 200, rng)
  x_t = x_t.astype(np.float32)
  for padding, mesh in (("borders", gd.make_mesh(data=8)),
                        ("circular", gd.make_mesh(data=4, batch=2))):
    want = np.asarray(gd.denoise(stats, x_t, 200, method="els", patch_size=3, padding=padding))
    got = np.asarray(gd.denoise(stats, x_t, 200, method="els", patch_size=3, padding=padding,
                                mesh=mesh))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_els_schedule_in_sampler():
  db, _, _ = _data((6, 6, 1), n=10, seed=7)
  stats = gd.fit(db.astype(np.float32))
  latents = gd.noise(jax.random.key(1), 2, stats.image_shape)
  out = gd.sample(stats, latents, method="els", num_steps=3, patch_size=(3, 1, 1))
  assert out.images.shape == (2, 6, 6, 1) and np.all(np.isfinite(out.x0_trajectory))
  assert list(out.timesteps) == [666, 333, 0]
  first = gd.denoise(stats, latents, 666, method="els", patch_size=3)  # step 1 uses k = 3
  np.testing.assert_allclose(out.x0_trajectory[0], first, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="schedule has 2 entries"):
    gd.sample(stats, latents, method="els", num_steps=3, patch_size=(3, 1))


@pytest.mark.parametrize("options, match", [
    ({"patch_size": 4}, "odd int"), ({"patch_size": 0}, "odd int"),
    ({"patch_size": (3, 2)}, "odd int"), ({"patch_size": ()}, "odd int"),
    ({"patch_size": True}, "odd int"), ({"padding": "reflect"}, "padding must be one of"),
    ({"patch_size": 7, "padding": "circular"}, "exceeds the image side"),
])
def test_els_bad_options(options, match):
  db, x0, _ = _data((6, 6, 1), n=4, seed=8)
  stats = gd.fit(db.astype(np.float32))
  with pytest.raises(ValueError, match=match):
    gd.denoise(stats, x0.astype(np.float32), 100, method="els", **options)


def test_els_multiply_adds_count():
  # 28×28×1, k = 5, borders: grid 24²·24², border rows 4·28 queries × 28 columns,
  # border columns 4·24 queries × 28 rows.
  want = 2 * 3 * 25 * (24 ** 4 + 4 * 28 * 28 + 4 * 24 * 28)
  assert els.multiply_adds((28, 28, 1), 5, "borders", 2, 3) == want


def test_golden_els_with_whole_database_is_full_els():
  db, x0, rng = _data((6, 5, 3), n=11, b=3, seed=11)
  stats = gd.fit(db.astype(np.float32))
  x_t, _ = _noisy(x0, 300, rng)
  x_t = x_t.astype(np.float32)
  want = np.asarray(gd.denoise(stats, x_t, 300, method="els", patch_size=3))
  got = np.asarray(gd.denoise(stats, x_t, 300, method="els_golden", patch_size=3, k_min=11,
                              k_max=11, subset_chunk_size=4))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_golden_els_subset_and_sharding():
  """k_t < N: equals the float64 ELS over the same golden subset."""
  db, x0, rng = _data((6, 6, 1), n=20, b=4, seed=12)
  db = db.astype(np.float32)
  stats = gd.fit(db)
  x_t, abar = _noisy(x0, 100, rng)
  x_t = x_t.astype(np.float32)
  key = jax.random.key(3)
  options = dict(patch_size=3, k_min=3, k_max=6, low_res_dim=3)
  got = np.asarray(gd.denoise(stats, x_t, 100, method="els_golden", key=key, **options))
  plan = els_golden.prepare(stats, abar, els_golden.Options(**options), 4)
  ret = plan.retrieval
  subset = np.asarray(golddiff.golden_subset(stats, ret, jnp.asarray(x_t.reshape(4, -1)), key))
  k = int(ret.k)
  assert 3 <= k < 20
  subset = subset[:, :k]
  for b in range(4):
    want = els_reference(x_t[b:b + 1].astype(np.float64), db[subset[b]].astype(np.float64),
                         abar, 3, "borders")
    np.testing.assert_allclose(got[b:b + 1], want, rtol=1e-4, atol=2e-5)


@pytest.mark.slow
def test_golden_els_sharded_equals_unsharded():
  db, x0, rng = _data((6, 6, 1), n=20, b=4, seed=12)
  stats = gd.fit(db.astype(np.float32))
  x_t = _noisy(x0, 100, rng)[0].astype(np.float32)
  key = jax.random.key(3)
  options = dict(patch_size=3, k_min=3, k_max=6, low_res_dim=3)
  want = np.asarray(gd.denoise(stats, x_t, 100, method="els_golden", key=key, **options))
  for mesh in (gd.make_mesh(data=8), gd.make_mesh(data=4, batch=2)):
    got = np.asarray(gd.denoise(stats, x_t, 100, method="els_golden", key=key, mesh=mesh,
                                **options))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options, match", [
    ({"k_min": 30}, "exceeds"), ({"select": "nope"}, "select"),
    ({"patch_size": 2}, "odd int"), ({"mask_threshold": 0.1}, "unknown option"),
])
def test_golden_els_bad_options(options, match):
  db, x0, _ = _data((6, 6, 1), n=20, seed=13)
  stats = gd.fit(db.astype(np.float32))
  with pytest.raises(ValueError, match=match):
    gd.denoise(stats, x0.astype(np.float32), 100, method="els_golden", **options)


def test_calibration_picks_best_size_per_step():
  from experiments import calibrate_els
  rng = np.random.default_rng(21)
  table = rng.uniform(-1, 1, size=(6, 4))
  sizes = [3, 5, 9, 15]
  want = [sizes[int(np.argmax(row))] for row in table]
  assert calibrate_els.best_sizes(table, sizes) == want
  assert calibrate_els.best_sizes([[0.5, 0.5]], [3, 5]) == [3]  # ties: the smaller size
  assert calibrate_els.parse_sizes(["7", "3"]) == [3, 7]
  for bad in (["4"], ["3", "3"], ["x"], []):
    with pytest.raises(ValueError, match="--sizes"):
      calibrate_els.parse_sizes(bad)
