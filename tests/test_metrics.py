"""golddiff_jax.metrics against float64 NumPy transcriptions of docs/method.md §8.4
(written here, on fresh random inputs), plus the memorization score with planted copies and uneven
chunk sizes."""

import jax.numpy as jnp
import numpy as np
import pytest

from golddiff_jax import metrics

SHAPE = (5, 7, 4, 3)  # B, H, W, C: D = 84


def _unit(x):
  return np.clip((np.asarray(x, np.float64) + 1.0) / 2.0, 0.0, 1.0)


def ref_metrics(x, y):
  """docs/method.md §8.4 in float64: per-sample MSE, r², L1 of the clamped unit-space images."""
  u = _unit(x).reshape(len(x), -1)
  v = _unit(y).reshape(len(y), -1)
  d = u.shape[1]
  sse = ((u - v) ** 2).sum(1)
  var = ((v - v.mean(1, keepdims=True)) ** 2).sum(1) / (d - 1)
  var = np.where(var == 0, 1.0, var)
  return {"mse": sse / d, "r2": 1.0 - sse / (d * var), "l1": np.abs(u - v).mean(1)}


def _images(seed, shape=SHAPE, scale=0.6):
  # Some values fall outside [-1, 1] (like Wiener's unclipped x̂_0) and exercise the clamp.
  return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def test_to_unit_clamps():
  got = np.asarray(metrics.to_unit(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])))
  np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_mse_r2_l1_match_float64_reference(seed):
  x, y = _images(seed), _images(seed + 100)
  assert np.abs(x).max() > 1.0  # the clamp matters
  want = ref_metrics(x, y)
  for name, fn in (("mse", metrics.mse), ("r2", metrics.r2), ("l1", metrics.l1)):
    per = fn(x, y, per_sample=True)
    assert per.shape == (SHAPE[0],)
    np.testing.assert_allclose(per, want[name], rtol=2e-5, atol=1e-7, err_msg=name)
    got = fn(jnp.asarray(x), jnp.asarray(y))  # JAX arrays work too
    assert isinstance(got, float)
    np.testing.assert_allclose(got, want[name].mean(), rtol=2e-5, atol=1e-7, err_msg=name)
  both = metrics.compare(x, y)
  np.testing.assert_allclose([both[k] for k in ("mse", "r2", "l1")],
                             [want[k].mean() for k in ("mse", "r2", "l1")], rtol=2e-5)


def test_r2_uses_unbiased_variance_and_the_d_minus_1_over_d_factor():
  """r² = 1 − SSE/(D·v_b) with v_b = SST/(D − 1): i.e. textbook SSE/SST scaled by (D − 1)/D."""
  x, y = _images(3, (2, 10)), _images(4, (2, 10))
  u, v = _unit(x), _unit(y)
  sse = ((u - v) ** 2).sum(1)
  sst = ((v - v.mean(1, keepdims=True)) ** 2).sum(1)
  want = 1.0 - sse / sst * (10 - 1) / 10
  np.testing.assert_allclose(metrics.r2(x, y, per_sample=True), want, rtol=2e-5)


def test_r2_of_a_constant_reference_uses_variance_one():
  y = np.full((3, 6, 6, 1), 0.3, np.float32)  # (0.3 + 1)/2: not exact in binary
  y[1] = -1.0                                  # all black after the clamp
  y[2] = 5.0                                   # saturated: clamps to all ones
  x = _images(5, y.shape)
  sse = ((_unit(x) - _unit(y)) ** 2).reshape(3, -1).sum(1)
  want = 1.0 - sse / 36  # v_b := 1, D = 36
  np.testing.assert_allclose(metrics.r2(x, y, per_sample=True), want, rtol=2e-5)
  np.testing.assert_allclose(ref_metrics(x, y)["r2"], want, rtol=1e-12)


def test_r2_can_be_negative_and_is_one_for_identical_images():
  y = _images(6, (4, 50), scale=0.3)
  x = -y  # anti-correlated: much worse than predicting the mean
  want = ref_metrics(x, y)["r2"]
  assert (want < 0).all()
  np.testing.assert_allclose(metrics.r2(x, y, per_sample=True), want, rtol=2e-5)
  assert metrics.r2(y, y) == 1.0 and metrics.mse(y, y) == 0.0 and metrics.l1(y, y) == 0.0


def test_trajectory_metrics_per_step_and_final():
  steps = 3
  tx = np.stack([_images(10 + s) for s in range(steps)])
  ty = np.stack([_images(20 + s) for s in range(steps)])
  got = metrics.trajectory_metrics(tx, ty)
  for name in ("mse", "r2", "l1"):
    want = [ref_metrics(tx[s], ty[s])[name].mean() for s in range(steps)]
    assert len(got[f"{name}_per_step"]) == steps
    np.testing.assert_allclose(got[f"{name}_per_step"], want, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(got[name], want[-1], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("bad, match", [
    ((np.zeros((2, 3)), np.zeros((2, 4))), "same shape"),
    ((np.zeros((2, 3)), np.full((2, 3), np.nan)), "NaN or Inf"),
    ((np.full((2, 3), np.inf), np.zeros((2, 3))), "NaN or Inf"),
    ((np.zeros(3), np.zeros(3)), "at least 2 dimensions"),
    ((np.zeros((0, 3)), np.zeros((0, 3))), "empty"),
    ((np.array([["a"]]), np.array([["a"]])), "real numbers"),
])
def test_bad_inputs_raise_value_errors(bad, match):
  with pytest.raises(ValueError, match=match):
    metrics.mse(*bad)


def test_r2_needs_two_values_per_sample_and_trajectories_need_three_dims():
  with pytest.raises(ValueError, match="at least 2 values"):
    metrics.r2(np.zeros((4, 1)), np.zeros((4, 1)))
  with pytest.raises(ValueError, match="at least 3 dimensions"):
    metrics.trajectory_metrics(np.zeros((4, 5)), np.zeros((4, 5)))
  with pytest.raises(ValueError, match="same shape"):
    metrics.trajectory_metrics(np.zeros((2, 4, 5)), np.zeros((3, 4, 5)))


# ----------------------------------------------------------------------------------------------
# Memorization
# ----------------------------------------------------------------------------------------------

def ref_nearest_two(samples, database):
  """Float64 brute force: (indices [B, 2], distances [B, 2]) in unit space, direct differences."""
  q = _unit(samples).reshape(len(samples), -1)
  db = _unit(database).reshape(len(database), -1)
  dist = np.sqrt(((q[:, None, :] - db[None]) ** 2).sum(-1))
  order = np.argsort(dist, axis=1, kind="stable")[:, :2]
  return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 37, 1000])
def test_memorization_matches_brute_force_with_planted_copies(chunk_size):
  n, b = 37, 6
  database = np.clip(_images(30, (n, 4, 4, 3), scale=0.5), -1, 1)
  samples = _images(31, (b, 4, 4, 3), scale=0.5)
  samples[0] = database[36]                    # exact copy of the last row (a partial chunk)
  samples[1] = database[5] + 0.01 * _images(32, (4, 4, 3))  # a near copy
  samples[2] = database[13]                    # exact copy in the middle
  got = metrics.memorization(samples, database, chunk_size=chunk_size)
  want_i, want_d = ref_nearest_two(samples, database)
  np.testing.assert_array_equal(got["index"], want_i)
  np.testing.assert_allclose(got["distance"], want_d, rtol=1e-5, atol=1e-6)
  ratio = want_d[:, 0] / want_d[:, 1]
  np.testing.assert_allclose(got["ratio"], ratio, rtol=1e-5, atol=1e-6)
  assert got["index"][0, 0] == 36 and got["index"][2, 0] == 13 and got["index"][1, 0] == 5
  assert got["distance"][0, 0] == 0.0 and got["distance"][2, 0] == 0.0
  assert got["memorized"][:3].all() and not got["memorized"][3:].any()
  assert got["fraction_memorized"] == pytest.approx(np.mean(ratio < 1 / 3))
  assert got["nearest_rms_mean"] == pytest.approx(want_d[:, 0].mean() / np.sqrt(48), rel=1e-5)


def test_memorization_duplicate_training_images_and_threshold():
  database = np.clip(_images(40, (10, 12), scale=0.5), -1, 1)
  database[7] = database[2]                     # a duplicated training image
  samples = np.stack([database[2], _images(41, (12,), scale=0.5)])
  got = metrics.memorization(samples, database, chunk_size=3)
  assert sorted(got["index"][0]) == [2, 7]
  assert got["ratio"][0] == 0.0 and got["memorized"][0]  # 0/0 counts as a copy
  loose = metrics.memorization(samples, database, threshold=1.0)
  assert loose["fraction_memorized"] == pytest.approx(np.mean(loose["ratio"] < 1.0))


def test_memorization_bad_inputs():
  db = np.zeros((5, 12), np.float32)
  with pytest.raises(ValueError, match="values per image"):
    metrics.memorization(np.zeros((2, 10)), db)
  with pytest.raises(ValueError, match="at least 2 images"):
    metrics.memorization(np.zeros((2, 12)), db[:1])
  with pytest.raises(ValueError, match="threshold"):
    metrics.memorization(np.zeros((2, 12)), db, threshold=0.0)
  with pytest.raises(ValueError, match="chunk_size"):
    metrics.memorization(np.zeros((2, 12)), db, chunk_size=0)
  with pytest.raises(ValueError, match="database contains NaN"):
    metrics.memorization(np.zeros((2, 12)), np.full((5, 12), np.nan))
