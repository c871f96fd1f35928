"""Dataset statistics (docs/method.md §3): gd.fit, save/load, input validation."""

import os
import zipfile

import numpy as np
import pytest

import golddiff_jax as gd
import reference as ref
from golddiff_jax.data import procedural_images

SHAPES = [  # (N, H, W, C)
    (37, 4, 3, 1),
    (50, 3, 5, 3),
    (101, 6, 5, 1),
    (13, 2, 4, 3),   # N < D: rank-deficient covariance
]


def _images(n, h, w, c, seed):
  if seed % 2:
    return np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32)
  return procedural_images(n, h, w, c, seed=seed)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_mean_and_covariance(shape, seed):
  images = _images(*shape, seed=seed)
  n, h, w, c = shape
  stats = gd.fit(images)
  flat = ref.flatten(images)
  assert stats.image_shape == (h, w, c)
  assert stats.num_images == n and stats.dim == h * w * c
  np.testing.assert_array_equal(np.asarray(stats.database), images.reshape(n, -1))
  np.testing.assert_allclose(np.asarray(stats.sq_norms), np.sum(flat**2, axis=1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(stats.mean), flat.mean(axis=0), rtol=0, atol=1e-7)
  lam = np.asarray(stats.eigvals, np.float64)
  vec = np.asarray(stats.eigvecs, np.float64)
  assert np.all(lam >= 0.0)
  cov = np.cov(flat, rowvar=False, ddof=1)  # unbiased, N − 1
  np.testing.assert_allclose((vec * lam) @ vec.T, cov, rtol=0, atol=2e-6 * np.abs(cov).max())
  # It is the unbiased estimate, not the biased one.
  biased = np.cov(flat, rowvar=False, ddof=0)
  assert np.abs((vec * lam) @ vec.T - biased).max() > 1e-3 * np.abs(cov).max()
  # Orthonormal eigenvectors and eigenvalues equal to the spectrum of np.cov.
  np.testing.assert_allclose(vec.T @ vec, np.eye(vec.shape[0]), atol=1e-5)
  np.testing.assert_allclose(np.sort(lam), np.clip(np.linalg.eigvalsh(cov), 0, None),
                             atol=2e-6 * np.abs(cov).max())


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_fit_chunk_size_does_not_change_result(chunk_size):
  images = _images(53, 3, 4, 3, seed=3)
  base = gd.fit(images)
  other = gd.fit(images, chunk_size=chunk_size)
  np.testing.assert_allclose(np.asarray(other.mean), np.asarray(base.mean), rtol=0, atol=1e-7)
  cov_base = (np.asarray(base.eigvecs, np.float64) * np.asarray(base.eigvals)) @ np.asarray(
      base.eigvecs, np.float64).T
  cov_other = (np.asarray(other.eigvecs, np.float64) * np.asarray(other.eigvals)) @ np.asarray(
      other.eigvecs, np.float64).T
  np.testing.assert_allclose(cov_other, cov_base, rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(other.eigvals), np.asarray(base.eigvals), atol=1e-6)


def test_fit_zero_variance_pixel():
  images = _images(40, 4, 4, 1, seed=4)
  images[:, 1, 2, 0] = 0.25
  stats = gd.fit(images)
  vec = np.asarray(stats.eigvecs, np.float64)
  cov = (vec * np.asarray(stats.eigvals)) @ vec.T
  k = 1 * 4 + 2
  np.testing.assert_allclose(cov[k], 0.0, atol=1e-7)
  np.testing.assert_allclose(np.asarray(stats.mean)[k], 0.25, atol=1e-7)


def test_save_load_round_trip(tmp_path):
  images = _images(21, 3, 5, 3, seed=6)
  stats = gd.fit(images)
  path = os.path.join(tmp_path, "sub", "stats.npz")
  gd.save_stats(stats, path)
  loaded = gd.load_stats(path)
  assert isinstance(loaded, gd.Stats)
  assert loaded.image_shape == (3, 5, 3)
  for name in ("database", "sq_norms", "mean", "eigvals", "eigvecs"):
    np.testing.assert_array_equal(np.asarray(getattr(loaded, name)),
                                  np.asarray(getattr(stats, name)), err_msg=name)
  assert [p for p in os.listdir(os.path.dirname(path)) if p != "stats.npz"] == []  # no temp left


def _write(path, data: bytes):
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def test_load_garbage_raises_value_error(tmp_path):
  with pytest.raises(ValueError, match="stats"):
    gd.load_stats(_write(tmp_path / "garbage.npz", b"this is not a stats file" * 10))
  with pytest.raises(ValueError):
    gd.load_stats(str(tmp_path / "missing.npz"))


def test_load_wrong_contents_raises_value_error(tmp_path):
  # A valid npz with missing arrays.
  p = tmp_path / "other.npz"
  np.savez(p, x=np.zeros(3))
  with pytest.raises(ValueError):
    gd.load_stats(str(p))
  # Arrays whose shapes do not match the recorded image shape.
  stats = gd.fit(_images(10, 2, 2, 1, seed=8))
  good = tmp_path / "good.npz"
  gd.save_stats(stats, str(good))
  with np.load(good) as f:
    arrays = dict(f)
  arrays["eigvecs"] = arrays["eigvecs"][:, :3]
  bad = tmp_path / "bad.npz"
  np.savez(bad, **arrays)
  with pytest.raises(ValueError, match="shape"):
    gd.load_stats(str(bad))
  arrays = dict(np.load(good))
  arrays["meta"] = np.asarray("{not json")
  np.savez(tmp_path / "badmeta.npz", **arrays)
  with pytest.raises(ValueError):
    gd.load_stats(str(tmp_path / "badmeta.npz"))


@pytest.mark.parametrize("kind", ["truncated", "bitflip", "empty"])
def test_load_corrupt_file_raises_value_error(tmp_path, kind):
  stats = gd.fit(_images(10, 2, 3, 1, seed=9))
  good = tmp_path / "good.npz"
  gd.save_stats(stats, str(good))
  raw = good.read_bytes()
  assert zipfile.is_zipfile(good)
  if kind == "truncated":
    data = raw[: len(raw) // 2]
  elif kind == "bitflip":
    data = raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:]
  else:
    data = b""
  with pytest.raises(ValueError):
    gd.load_stats(_write(tmp_path / f"{kind}.npz", data))


def _bad_inputs():
  good = _images(8, 3, 3, 1, seed=10)
  nan = good.copy()
  nan[2, 1, 1, 0] = np.nan
  inf = good.copy()
  inf[0, 0, 0, 0] = np.inf
  big = good.copy()
  big[3, 2, 2, 0] = 1.5
  small = good.copy()
  small[1, 0, 2, 0] = -1.01
  return [
      pytest.param(nan, "NaN", id="nan"),
      pytest.param(inf, "Inf", id="inf"),
      pytest.param(good[..., 0], "4 dimensions", id="3d"),
      pytest.param(good[None], "4 dimensions", id="5d"),
      pytest.param(big, r"\[-1", id="above_range"),
      pytest.param(small, r"\[-1", id="below_range"),
      pytest.param(good[:1], "at least 2", id="one_image"),
      pytest.param(good[:0], "at least 2", id="no_image"),
      pytest.param(np.full((4, 2, 2, 1), "a"), "real", id="strings"),
  ]


@pytest.mark.parametrize("images,message", _bad_inputs())
def test_fit_rejects_bad_images(images, message):
  with pytest.raises(ValueError, match=message):
    gd.fit(images)


def test_fit_rejects_bad_chunk_size():
  with pytest.raises(ValueError, match="chunk_size"):
    gd.fit(_images(4, 2, 2, 1, seed=11), chunk_size=0)
