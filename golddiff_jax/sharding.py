"""Device meshes and the collectives that make a sharded database give one device's answer.

The database [N, D] is sharded along N over the mesh axis ``data``; queries may be sharded over an
optional ``batch`` axis. N need not divide by the number of ``data`` devices: the database is
padded with zero rows *at the end* to N_pad = ⌈N/S⌉·S, and every per-shard algorithm masks the
rows whose global index is ≥ N. Because the padding sits at the end, global row i is image i on
any device count, so anything indexed by rows (GoldDiff's random pool) is the same on 1 or 64
devices.

Per-shard algorithms run under ``jax.shard_map`` (what ``pmap`` is built on in current JAX, with
the collectives written out). Each shard produces partial results over its rows and one of these
merges them:

* `combine_softmax`: online-softmax statistics (max, sum, weighted sum) → ``pmax`` / ``psum``;
* `merge_smallest`: each shard's k best (values, global indices) → ``all_gather`` → global k best.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from golddiff_jax import chunking, select as select_lib, softmax

DATA = "data"
BATCH = "batch"
AXES = (DATA, BATCH)


def make_mesh(data: int = -1, batch: int = 1, devices=None) -> Mesh:
  """A mesh with axes (``batch``, ``data``); ``data = -1`` takes every device left over.

  Args:
    data: devices along the database axis, or -1 for ``len(devices) // batch``.
    batch: devices along the query axis (1: queries replicated).
    devices: the devices to use (default: all of ``jax.devices()``).
  """
  devices = list(jax.devices() if devices is None else devices)
  for name, value in (("data", data), ("batch", batch)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"mesh {name} must be an int, got {value!r}")
  if batch < 1:
    raise ValueError(f"mesh batch must be >= 1, got {batch}")
  if data == -1:
    data = len(devices) // batch
  if data < 1 or data * batch > len(devices):
    raise ValueError(f"a mesh of batch={batch} × data={data} devices needs {max(data, 1) * batch} "
                     f"devices; {len(devices)} available")
  return jax.make_mesh((batch, data), (BATCH, DATA), devices=devices[:batch * data],
                       axis_types=(AxisType.Auto, AxisType.Auto))


def check_mesh(mesh: Any) -> None:
  if not isinstance(mesh, Mesh):
    raise ValueError(f"mesh must be a jax.sharding.Mesh (see golddiff_jax.sharding.make_mesh), "
                     f"got {type(mesh).__name__}")
  if DATA not in mesh.axis_names:
    raise ValueError(f"mesh must have a {DATA!r} axis (the database axis); it has "
                     f"{mesh.axis_names}")
  unknown = set(mesh.axis_names) - set(AXES)
  if unknown:
    raise ValueError(f"mesh axes must be among {AXES}; unknown: {sorted(unknown)}")


def data_size(mesh: Mesh) -> int:
  return int(mesh.shape[DATA])


def batch_size(mesh: Mesh) -> int:
  return int(mesh.shape[BATCH]) if BATCH in mesh.axis_names else 1


def batch_spec(mesh: Mesh) -> P:
  """Queries [B, ...]: sharded over ``batch`` when the mesh has it, else replicated."""
  return P(BATCH) if BATCH in mesh.axis_names else P()


def padded_rows(n: int, mesh: Mesh) -> int:
  shards = data_size(mesh)
  return -(-n // shards) * shards


def rows_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_rows(rows: Any, mesh: Mesh) -> jax.Array:
  """Host or device rows [N, ...] → [N_pad, ...] zero-padded at the end, sharded on ``data``.

  Host (NumPy) input goes to the devices shard by shard, never whole onto one device.
  """
  n = rows.shape[0]
  pad = padded_rows(n, mesh) - n
  if isinstance(rows, np.ndarray):
    if pad:
      rows = np.concatenate([rows, np.zeros((pad, *rows.shape[1:]), rows.dtype)])
    return jax.device_put(rows, rows_sharding(mesh))
  return _pad_rows(rows, pad, out_sharding=rows_sharding(mesh))


def process_blocks(mesh: Mesh) -> list[tuple[int, int]]:
  """For each process, the (first, last + 1) positions it holds along the ``data`` axis."""
  devices = mesh.devices.reshape(-1, data_size(mesh)) if BATCH in mesh.axis_names else (
      mesh.devices.reshape(1, -1))
  owners = [d.process_index for d in devices[0]]
  blocks = []
  for p in range(max(owners) + 1):
    where = [j for j, o in enumerate(owners) if o == p]
    if not where or where != list(range(where[0], where[-1] + 1)):
      raise ValueError(f"process {p}'s devices must form one contiguous run of the mesh's "
                       f"{DATA!r} axis; owners along it: {owners}")
    blocks.append((where[0], where[-1] + 1))
  return blocks


def assemble_rows(local: np.ndarray, counts, mesh: Mesh) -> jax.Array:
  """One global [N_pad, ...] array, sharded on ``data``, from every process's consecutive rows.

  ``counts[p]`` rows come from process p (this process passes ``local``). Each process first
  places its rows, zero-padded to a common block, on its own devices
  (``jax.make_array_from_process_local_data``); an on-device gather then puts image i at row i
  and the padding at the end, the layout of `put_rows`.
  """
  counts = np.asarray(counts, np.int64).reshape(-1)
  blocks = process_blocks(mesh)
  if len(blocks) != len(counts):
    raise ValueError(f"{len(counts)} processes sent rows but the mesh spans {len(blocks)}")
  per_device = max(1, max(-(-int(c) // (b - a)) for c, (a, b) in zip(counts, blocks)))
  me = jax.process_index()
  first, last = blocks[me]
  block = np.zeros(((last - first) * per_device, *local.shape[1:]), local.dtype)
  block[:local.shape[0]] = local
  staged = jax.make_array_from_process_local_data(
      rows_sharding(mesh), block, (data_size(mesh) * per_device, *local.shape[1:]))
  n = int(counts.sum())
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
  owner = np.repeat(np.arange(len(counts)), counts)
  source = np.asarray([blocks[p][0] for p in owner], np.int64) * per_device + (
      np.arange(n) - offsets[owner])
  total = padded_rows(n, mesh)
  source = np.concatenate([source, np.zeros(total - n, np.int64)]).astype(np.int32)
  keep = np.arange(total) < n

  def reorder(staged, source, keep):
    rows = jnp.take(staged, source, axis=0)
    return jnp.where(keep.reshape((-1,) + (1,) * (rows.ndim - 1)), rows, 0)

  out = jax.jit(reorder, out_shardings=rows_sharding(mesh))
  return out(staged, jax.device_put(source, replicated(mesh)),
             jax.device_put(keep, replicated(mesh)))


def _pad_rows(rows: jax.Array, pad: int, *, out_sharding) -> jax.Array:
  """Pads on the rows' own devices, then moves the result (possibly to other devices)."""
  if pad:
    rows = jax.jit(lambda r: jnp.pad(r, [(0, pad)] + [(0, 0)] * (r.ndim - 1)))(rows)
  return jax.device_put(rows, out_sharding)


def constrain(x: jax.Array, mesh: Mesh, spec: P) -> jax.Array:
  """Asks the compiler to lay ``x`` out as ``spec`` on ``mesh`` (inside jit; any axis types)."""
  if all(t == AxisType.Explicit for t in mesh.axis_types):
    return jax.sharding.reshard(x, NamedSharding(mesh, spec))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def mesh_of(array: jax.Array) -> Mesh | None:
  """The mesh a database array is sharded on along ``data``, or None."""
  sharding = getattr(array, "sharding", None)
  if isinstance(sharding, NamedSharding) and DATA in sharding.mesh.axis_names and (
      tuple(sharding.spec)[:1] == (DATA,)):
    return sharding.mesh
  return None


# ---- inside shard_map -------------------------------------------------------------------------

def local_rows(num_local: int, num_valid: int) -> tuple[jax.Array, jax.Array]:
  """(offset, valid [num_local]): this shard's first global row and which rows are real images."""
  offset = jax.lax.axis_index(DATA) * num_local
  valid = offset + jnp.arange(num_local) < num_valid
  return offset, valid


def combine_softmax(state: softmax.SoftmaxState, axis: str = DATA) -> softmax.SoftmaxState:
  """Merges exact online-softmax states computed on disjoint row sets across the mesh axis
  ``axis`` (`softmax.combine_across`)."""
  return softmax.combine_across(state, axis)


def merge_smallest(values: jax.Array, index: jax.Array, k: int, *, axis: str = DATA,
                   extra: tuple[jax.Array, ...] = ()) -> tuple[jax.Array, ...]:
  """Global k smallest of every shard's candidates [B, k_local] (values, global indices, extra).

  All shards' candidates are gathered ([B, S·k_local], shard-major, so ties go to lower shards,
  i.e. lower global indices, as on one device) and the k smallest kept with an exact top-k.
  Returns (values [B, k], index [B, k], *extra [B, k]) on every shard.
  """
  def gather(x):
    return jax.lax.all_gather(x, axis, axis=1, tiled=True)

  best, pos = select_lib.select(gather(values), k, method="exact")
  picked = [jnp.take_along_axis(gather(x), pos, axis=1) for x in (index, *extra)]
  return (best, *picked)


def fold_subset_rows(database: jax.Array, subset: jax.Array, offset: jax.Array, chunk_size: int,
                     count, fold, init):
  """Folds every sample's own database rows into ``init`` with the rows sharded over ``data``.

  The subset [B, K] (global row indices, the same on every shard; only the first ``count``
  entries count, -1 entries never) is walked in blocks of c·S entries: each shard contributes the
  rows it holds (zeros elsewhere) and a reduce-scatter (``psum_scatter``) hands every shard c
  complete rows of the block, so the work on them is split S ways. ``fold(carry, rows [B, c, D],
  valid [B, c]) -> carry`` consumes each shard's share; the blocks past ``count`` are skipped.
  The caller merges the shards' results (e.g. `combine_softmax`).
  """
  num_local = database.shape[0]
  k = subset.shape[1]
  shards = jax.lax.psum(1, DATA)
  chunk, total = chunking.chunk_for(k, chunk_size, shards)
  if count is not None:
    subset = jnp.where(jnp.arange(k) < count, subset, -1)
  padded = jnp.pad(subset, ((0, 0), (0, total - k)), constant_values=-1)
  me = jax.lax.axis_index(DATA)

  def body(step, carry):
    index = jax.lax.dynamic_slice_in_dim(padded, step * (chunk * shards), chunk * shards, axis=1)
    local = index - offset
    held = (index >= 0) & (local >= 0) & (local < num_local)
    rows = jnp.take(database, jnp.clip(local, 0, num_local - 1), axis=0)
    rows = jnp.where(held[:, :, None], rows, 0.0)
    rows = jax.lax.psum_scatter(rows, DATA, scatter_dimension=1, tiled=True)
    mine = jax.lax.dynamic_slice_in_dim(index, me * chunk, chunk, axis=1) >= 0
    return fold(carry, rows, mine)

  trips = chunking.chunk_trips(count, chunk * shards, total // (chunk * shards))
  return jax.lax.fori_loop(0, trips, body, init)


# ---- shard_map harnesses ----------------------------------------------------------------------

def stats_specs(stats) -> Any:
  """PartitionSpecs of a sharded `Stats`: database and norms on ``data``, the rest replicated."""
  specs = jax.tree.map(lambda _: P(), stats)
  return specs.replace(database=P(DATA), sq_norms=P(DATA))


def replicated_specs(tree) -> Any:
  return jax.tree.map(lambda _: P(), tree)


def softmax_over_shards(local_state, stats, plan, x_t: jax.Array, mesh: Mesh) -> jax.Array:
  """x̂_0 of an exact softmax denoiser whose database is sharded over ``mesh``.

  Each shard folds its valid rows into online-softmax statistics
  (``local_state(database_shard, plan, x_t, row_valid) -> SoftmaxState``); the states merge
  with ``pmax``/``psum`` over ``data`` and every shard finalises the same [B, D] result. Queries
  are split over the ``batch`` axis when the mesh has one.
  """
  num_valid = stats.num_images

  def body(database, plan, x_t):
    _, valid = local_rows(database.shape[0], num_valid)
    state = combine_softmax(local_state(database, plan, x_t, valid))
    return softmax.finalize(state)

  queries = batch_spec(mesh)
  return jax.shard_map(body, mesh=mesh, in_specs=(P(DATA), replicated_specs(plan), queries),
                       out_specs=queries, check_vma=False)(stats.database, plan, x_t)
