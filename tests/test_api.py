"""The public API boundary: shapes of gd.denoise / gd.noise and ValueError for bad input, each with a
message that names the problem."""

import jax
import numpy as np
import pytest

import golddiff_jax as gd
import reference as ref
from golddiff_jax.data import procedural_images

SHAPE = (6, 5, 3)  # H, W, C
_CACHE = {}


def _stats():
  if "stats" not in _CACHE:
    _CACHE["stats"] = gd.fit(procedural_images(30, *SHAPE, seed=21))
  return _CACHE["stats"]


def _x(batch=3, shape=SHAPE, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def test_methods_registry():
  assert {"optimal", "wiener", "pca_locality"} <= set(gd.METHODS)


@pytest.mark.parametrize("method", ["optimal", "wiener", "pca_locality"])
def test_denoise_nhwc_shape_and_values(method):
  stats = _stats()
  x = _x(batch=5)
  out = np.asarray(gd.denoise(stats, x, 400, method=method))
  assert out.shape == (5, *SHAPE)
  db = np.asarray(stats.database, np.float64)
  flat = x.reshape(5, -1)
  if method == "optimal":
    want = ref.optimal(db, flat, ref.ABAR[400])
  elif method == "wiener":
    want = ref.wiener(db, flat, ref.ABAR[400])
  else:
    want = None
  if want is not None:
    np.testing.assert_allclose(out.reshape(5, -1), want, rtol=1e-4, atol=1e-5)
  # NHWC flattening is per image in (H, W, C) order: permuting the batch permutes the output.
  perm = [4, 2, 0, 1, 3]
  np.testing.assert_allclose(np.asarray(gd.denoise(stats, x[perm], 400, method=method)),
                             out[perm], rtol=1e-5, atol=1e-6)


def test_noise():
  a = np.asarray(gd.noise(jax.random.key(7), 5, SHAPE))
  b = np.asarray(gd.noise(jax.random.key(7), 5, SHAPE))
  c = np.asarray(gd.noise(jax.random.key(8), 5, SHAPE))
  assert a.shape == (5, *SHAPE) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert abs(a.mean()) < 0.3 and 0.7 < a.std() < 1.3
  with pytest.raises(ValueError, match="batch"):
    gd.noise(jax.random.key(0), 0, SHAPE)


# ------------------------------------------------------------------------------------------------
# Bad input → ValueError naming the problem
# ------------------------------------------------------------------------------------------------

def _both(call):
  """Runs `call(fn)` for fn in (denoise at t=100, sample with 2 steps)."""
  stats = _stats()

  def denoise(x=None, **kw):
    return gd.denoise(stats, _x() if x is None else x, kw.pop("t", 100), **kw)

  def sample(x=None, **kw):
    return gd.sample(stats, _x() if x is None else x, num_steps=kw.pop("num_steps", 2), **kw)

  for fn in (denoise, sample):
    call(fn)


def test_unknown_method_lists_valid_methods():
  def call(fn):
    with pytest.raises(ValueError, match="unknown method") as info:
      fn(method="golddif")
    for name in gd.METHODS:
      assert name in str(info.value)
  _both(call)


@pytest.mark.parametrize("method,valid", [
    ("optimal", ["temperature", "chunk_size"]),
    ("pca_locality", ["mask_threshold", "temperature", "softmax", "wssm_chunk", "mask_impl",
                      "mask_tile", "chunk_size"]),
    ("wiener", []),
])
def test_unknown_option_lists_valid_options(method, valid):
  def call(fn):
    with pytest.raises(ValueError, match="unknown option") as info:
      fn(method=method, mask_treshold=0.1)
    message = str(info.value)
    assert "mask_treshold" in message
    for option in valid:
      assert option in message
  _both(call)


@pytest.mark.parametrize("shape", [(5, 6, 3), (6, 5, 1), (6, 5, 3, 1)])
def test_image_shape_mismatch(shape):
  def call(fn):
    x = np.zeros((2, *shape), np.float32)
    with pytest.raises(ValueError, match="shape"):
      fn(x=x, method="wiener")
  _both(call)


@pytest.mark.parametrize("bad,message", [
    (np.full((2, *SHAPE), np.nan, np.float32), "NaN"),
    (np.full((2, *SHAPE), np.inf, np.float32), "Inf"),
    (np.zeros(SHAPE, np.float32), "NHWC"),
    (np.zeros((2, 6 * 5 * 3), np.float32), "NHWC"),
    (np.zeros((0, *SHAPE), np.float32), "at least 1"),
    (np.full((2, *SHAPE), "x"), "real"),
])
def test_bad_images(bad, message):
  def call(fn):
    with pytest.raises(ValueError, match=message):
      fn(x=bad, method="optimal")
  _both(call)


@pytest.mark.parametrize("num_steps", [0, -1, 2.0, "10", True, None, 1001])
def test_bad_num_steps(num_steps):
  with pytest.raises(ValueError, match="num_steps"):
    gd.sample(_stats(), _x(), method="wiener", num_steps=num_steps)


@pytest.mark.parametrize("t", [-1, 1000, 2.5, "5", True, None])
def test_bad_t(t):
  with pytest.raises(ValueError, match="t must be"):
    gd.denoise(_stats(), _x(), t, method="wiener")


@pytest.mark.parametrize("theta", [-0.1, 0.0, 1.0, 1.5, "0.1", None, True, float("nan")])
def test_bad_mask_threshold(theta):
  def call(fn):
    with pytest.raises(ValueError, match="mask_threshold"):
      fn(method="pca_locality", mask_threshold=theta)
  _both(call)


@pytest.mark.parametrize("option,value", [
    ("mask_impl", "csr"), ("mask_impl", None), ("softmax", "wss"), ("softmax", "ss"),
    ("wssm_chunk", 0), ("mask_tile", 0), ("mask_tile", 2.5), ("mask_tile", True),
])
def test_bad_pca_options(option, value):
  def call(fn):
    with pytest.raises(ValueError, match=option):
      fn(method="pca_locality", **{option: value})
  _both(call)


@pytest.mark.parametrize("method", ["optimal", "pca_locality"])
@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan"), float("inf"), "1"])
def test_bad_temperature(method, temperature):
  def call(fn):
    with pytest.raises(ValueError, match="temperature"):
      fn(method=method, temperature=temperature)
  _both(call)


@pytest.mark.parametrize("chunk", [0, -4, 2.5])
def test_bad_chunk_size(chunk):
  with pytest.raises(ValueError, match="chunk_size"):
    gd.denoise(_stats(), _x(), 100, method="optimal", chunk_size=chunk)


def test_bad_stats():
  with pytest.raises(ValueError, match="stats"):
    gd.denoise({"mean": 0}, _x(), 100, method="wiener")
  with pytest.raises(ValueError, match="stats"):
    gd.sample(None, _x(), method="wiener")
