"""Dataset statistics: the database, its mean and the eigendecomposition of its covariance (spec §3).

``fit`` streams the images in chunks and accumulates the mean and the unbiased covariance in float64
(two passes: mean first, then covariance), then takes ``eigh`` in float64 and clips λ at 0. The
database itself is kept in float32, flattened per image in (H, W, C) order; every formula in the
spec is equivariant under a fixed permutation of the coordinates, so this matches the published
channel-major results exactly.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import sharding, validation
from golddiff_jax.atomic import atomic_write

_STATS_FORMAT_VERSION = 1


@flax.struct.dataclass
class Stats:
  """Everything an analytical denoiser needs about its training set (a pytree).

  Attributes:
    database: [N, D] float32 images in [-1, 1], flattened in (H, W, C) order.
    sq_norms: [N] float32 squared norms ‖x_i‖².
    mean: [D] float32 data mean μ.
    eigvals: [D] float32 covariance eigenvalues λ (ascending, clipped at 0).
    eigvecs: [D, D] float32 eigenvectors V (columns), S = V diag(λ) Vᵀ.
    image_shape: static (H, W, C).
    num_valid: static N when ``database`` is padded (sharded over a mesh: rows ≥ N are zero
      padding, see `golddiff_jax.sharding`); None when every row is an image.
  """
  database: jax.Array
  sq_norms: jax.Array
  mean: jax.Array
  eigvals: jax.Array
  eigvecs: jax.Array
  image_shape: tuple[int, int, int] = flax.struct.field(pytree_node=False)
  num_valid: int | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def num_images(self) -> int:
    """N, the number of images (padding rows of a sharded database excluded)."""
    return int(self.database.shape[0] if self.num_valid is None else self.num_valid)

  @property
  def images(self) -> jax.Array:
    """The database without padding rows [N, D]."""
    return self.database if self.num_valid is None else self.database[:self.num_valid]

  @property
  def mesh(self):
    """The mesh the database is sharded on (None: not sharded)."""
    return sharding.mesh_of(self.database)

  @property
  def dim(self) -> int:
    return int(self.database.shape[1])


def _moments(flat: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance in float64, streamed over row chunks (two passes)."""
  n, d = flat.shape
  total = np.zeros(d, np.float64)
  for start in range(0, n, chunk_size):
    total += flat[start:start + chunk_size].sum(axis=0, dtype=np.float64)
  mean = total / n
  scatter = np.zeros((d, d), np.float64)
  for start in range(0, n, chunk_size):
    centred = flat[start:start + chunk_size].astype(np.float64) - mean
    scatter += centred.T @ centred
  cov = scatter / max(n - 1, 1)
  return mean, cov


def fit(images: Any, *, chunk_size: int = 1024, mesh=None) -> Stats:
  """Computes the statistics of a set of images.

  Args:
    images: [N, H, W, C] array (NumPy or JAX) with values in [-1, 1], N ≥ 2.
    chunk_size: rows per streamed chunk of the float64 accumulation (memory only).
    mesh: optional `jax.sharding.Mesh`: the database goes straight from the host to its shards
      along the mesh's ``data`` axis (never whole onto one device); see `shard`.

  Returns:
    A `Stats` pytree.
  """
  images = validation.check_images(images, name="images", min_count=2)
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  n, h, w, c = images.shape
  flat = images.reshape(n, h * w * c)
  mean, cov = _moments(flat, chunk_size)
  eigvals, eigvecs = np.linalg.eigh(cov)
  eigvals = np.clip(eigvals, 0.0, None)
  return from_arrays(flat, mean, eigvals, eigvecs, (h, w, c), mesh=mesh)


def from_arrays(flat, mean, eigvals, eigvecs, image_shape, *, mesh=None) -> Stats:
  """Builds `Stats` from host arrays (float32 on device; sharded on ``mesh`` if given)."""
  flat = np.asarray(flat, np.float32)
  sq_norms = np.einsum("nd,nd->n", flat, flat, dtype=np.float64).astype(np.float32)
  small = [np.asarray(a, np.float32) for a in (mean, eigvals, eigvecs)]
  image_shape = tuple(int(v) for v in image_shape)
  if mesh is None:
    return Stats(jnp.asarray(flat), jnp.asarray(sq_norms), *map(jnp.asarray, small),
                 image_shape=image_shape)
  sharding.check_mesh(mesh)
  everywhere = sharding.replicated(mesh)
  return Stats(sharding.put_rows(flat, mesh), sharding.put_rows(sq_norms, mesh),
               *(jax.device_put(a, everywhere) for a in small), image_shape=image_shape,
               num_valid=flat.shape[0])


def shard(stats: Stats, mesh) -> Stats:
  """``stats`` with the database (and its norms) sharded along N over ``mesh``'s ``data`` axis,
  zero-padded at the end to a multiple of the axis size; the rest replicated. A no-op when the
  stats already live on ``mesh``."""
  sharding.check_mesh(mesh)
  if stats.mesh == mesh and stats.num_valid is not None:
    return stats
  everywhere = sharding.replicated(mesh)
  return Stats(sharding.put_rows(stats.images, mesh), sharding.put_rows(stats.sq_norms[
      :stats.num_images], mesh), *(jax.device_put(getattr(stats, k), everywhere)
                                    for k in ("mean", "eigvals", "eigvecs")),
               image_shape=stats.image_shape, num_valid=stats.num_images)


def save(stats: Stats, path: str) -> None:
  """Writes `stats` to ``path`` (a .npz file) atomically: temp file, then rename."""
  arrays = {k: np.asarray(getattr(stats, k)) for k in ("mean", "eigvals", "eigvecs")}
  arrays["database"] = np.asarray(stats.images)
  meta = {"version": _STATS_FORMAT_VERSION, "image_shape": list(stats.image_shape)}
  atomic_write(path, lambda f: np.savez(f, meta=np.asarray(json.dumps(meta)), **arrays))


def load(path: str) -> Stats:
  """Reads statistics written by `save`; raises ValueError if the file is not a valid stats file."""
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(str(f["meta"]))
      arrays = {k: f[k] for k in ("database", "mean", "eigvals", "eigvecs")}
  except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable golddiff_jax stats file: {e}") from e
  if meta.get("version") != _STATS_FORMAT_VERSION:
    raise ValueError(f"{path}: unsupported stats format version {meta.get('version')}")
  h, w, c = meta["image_shape"]
  d = h * w * c
  db = arrays["database"]
  if (db.ndim != 2 or db.shape[1] != d or arrays["mean"].shape != (d,)
      or arrays["eigvals"].shape != (d,) or arrays["eigvecs"].shape != (d, d)):
    raise ValueError(f"{path}: arrays do not match image shape {(h, w, c)}")
  return from_arrays(db, arrays["mean"], arrays["eigvals"], arrays["eigvecs"], (h, w, c))
