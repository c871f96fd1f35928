"""Dataset statistics: the database, its mean and the eigendecomposition of its covariance
(docs/method.md §3).

``fit`` streams the images in chunks and accumulates the mean and the unbiased covariance in float64
(two passes: mean first, then covariance), then takes ``eigh`` in float64 and clips λ at 0. The
database itself is kept in float32, flattened per image in (H, W, C) order; every formula is
equivariant under a fixed permutation of the coordinates (docs/method.md §1.2), so this matches
the published channel-major results exactly.
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


def _row_sum(flat: np.ndarray, chunk_size: int) -> np.ndarray:
  """Σ_i x_i in float64 [D], streamed over row chunks."""
  total = np.zeros(flat.shape[1], np.float64)
  for start in range(0, flat.shape[0], chunk_size):
    total += flat[start:start + chunk_size].sum(axis=0, dtype=np.float64)
  return total


def _scatter(flat: np.ndarray, mean: np.ndarray, chunk_size: int) -> np.ndarray:
  """Σ_i (x_i − μ)(x_i − μ)ᵀ in float64 [D, D], streamed over row chunks."""
  d = flat.shape[1]
  scatter = np.zeros((d, d), np.float64)
  for start in range(0, flat.shape[0], chunk_size):
    centred = flat[start:start + chunk_size].astype(np.float64) - mean
    scatter += centred.T @ centred
  return scatter


def _moments(flat: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance in float64, streamed over row chunks (two passes)."""
  n = flat.shape[0]
  mean = _row_sum(flat, chunk_size) / n
  return mean, _scatter(flat, mean, chunk_size) / max(n - 1, 1)


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


def fit_process_local(local_images: Any, *, mesh, chunk_size: int = 1024,
                      allgather=None) -> Stats:
  """Multi-host `fit`: each process passes only its own slice of the images.

  The slices are consecutive runs of the dataset in process order (what
  `golddiff_jax.data.load_images(..., gather=False)` returns). Mean and covariance are reduced
  across processes in float64 (sums all-gathered between the two passes); the database is
  assembled as one global array sharded over ``mesh``'s ``data`` axis
  (``jax.make_array_from_process_local_data``), then moved on device into the padded-at-the-end
  row order of `shard`, so row i is image i whatever the number of processes.

  Args:
    local_images: this process's [n_p, H, W, C] images in [-1, 1].
    mesh: the mesh; each process's devices must hold a contiguous run of its ``data`` axis.
    chunk_size: rows per streamed chunk of the float64 accumulation.
    allgather: x → [P, ...] stacked over processes (default: ``process_allgather``).
  """
  sharding.check_mesh(mesh)
  images = validation.check_images(local_images, name="images", min_count=0)
  if allgather is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    allgather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=False))
  n_local, h, w, c = images.shape
  flat = images.reshape(n_local, h * w * c)
  counts = np.asarray(allgather(np.asarray([n_local], np.int64))).reshape(-1)
  n = int(counts.sum())
  if n < 2:
    raise ValueError(f"need at least 2 images over all processes, got {n}")
  mean = np.asarray(allgather(_row_sum(flat, chunk_size))).sum(axis=0) / n
  scatter = _scatter(flat, mean, chunk_size)
  block = 256  # reduce the D×D scatter in row blocks: P·256·D values in flight, not P·D²
  for start in range(0, scatter.shape[0], block):
    scatter[start:start + block] = np.asarray(
        allgather(scatter[start:start + block])).sum(axis=0)
  eigvals, eigvecs = np.linalg.eigh(scatter / max(n - 1, 1))
  flat = flat.astype(np.float32)
  sq_norms = np.einsum("nd,nd->n", flat, flat, dtype=np.float64).astype(np.float32)
  everywhere = sharding.replicated(mesh)
  small = (mean, np.clip(eigvals, 0.0, None), eigvecs)
  return Stats(sharding.assemble_rows(flat, counts, mesh),
               sharding.assemble_rows(sq_norms, counts, mesh),
               *(jax.device_put(np.asarray(a, np.float32), everywhere) for a in small),
               image_shape=(h, w, c), num_valid=n)


def unshard(stats: Stats) -> Stats:
  """``stats`` on one device with the padding rows dropped (a no-op for unsharded stats)."""
  if stats.num_valid is None:
    return stats
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    host = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
  else:
    host = np.asarray
  return from_arrays(host(stats.database)[:stats.num_images], host(stats.mean),
                     host(stats.eigvals), host(stats.eigvecs), stats.image_shape)


def save(stats: Stats, path: str, *, source: dict | None = None) -> None:
  """Writes `stats` to ``path`` (a .npz file) atomically: temp file, then rename.

  ``source`` (JSON-able) describes what the statistics were fitted from; `load` can require it.
  """
  stats = unshard(stats)
  arrays = {k: np.asarray(getattr(stats, k)) for k in ("database", "mean", "eigvals", "eigvecs")}
  meta = {"version": _STATS_FORMAT_VERSION, "image_shape": list(stats.image_shape),
          "source": source}
  atomic_write(path, lambda f: np.savez(f, meta=np.asarray(json.dumps(meta)), **arrays))


def load(path: str, *, mesh=None, source: dict | None = None,
         num_images: int | None = None) -> Stats:
  """Reads statistics written by `save` (sharded over ``mesh`` if given).

  Raises ValueError if the file is not a valid stats file, holds NaN/Inf or negative
  eigenvalues, was saved with another ``source`` (when one is given) or holds another number of
  images than ``num_images`` (when given).
  """
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(str(f["meta"]))
      arrays = {k: f[k] for k in ("database", "mean", "eigvals", "eigvecs")}
  except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable golddiff_jax stats file: {e}") from e
  if meta.get("version") != _STATS_FORMAT_VERSION:
    raise ValueError(f"{path}: unsupported stats format version {meta.get('version')}")
  if source is not None and meta.get("source") != source:
    raise ValueError(f"{path} was fitted from {meta.get('source')}, not {source}")
  h, w, c = meta["image_shape"]
  d = h * w * c
  db = arrays["database"]
  if (db.ndim != 2 or db.shape[1] != d or arrays["mean"].shape != (d,)
      or arrays["eigvals"].shape != (d,) or arrays["eigvecs"].shape != (d, d)):
    raise ValueError(f"{path}: arrays do not match image shape {(h, w, c)}")
  if num_images is not None and db.shape[0] != num_images:
    raise ValueError(f"{path} holds {db.shape[0]} images, expected {num_images}")
  for name, array in arrays.items():
    if not np.all(np.isfinite(array)):
      raise ValueError(f"{path}: {name} contains NaN or Inf")
  if arrays["eigvals"].size and arrays["eigvals"].min() < 0:
    raise ValueError(f"{path}: negative eigenvalues")
  return from_arrays(db, arrays["mean"], arrays["eigvals"], arrays["eigvecs"], (h, w, c),
                     mesh=mesh)
