"""GoldDiff's golden-subset retrieval (docs/method.md §6.2 steps 5–8): pre-sample, coarse proxy
screen, fine selection. Pure jit-able functions of static sizes.

For each sample b of a step with budgets (m_t, k_t) and k_max proxy survivors:

1. **Pre-sample** (`pool_mask`): a uniform random subset R_b of m_t of the N images without
   replacement: the m_t smallest of N random uint32 keys drawn from the sample's own key
   fold_in(fold_in(step_key, POOL_STREAM), b), found by bisection (`select.smallest_mask`). The
   pool is a mask [B, N]; non-pool proxy distances become +inf (docs/method.md §6.6).
2. **Coarse screen** (`coarse_screen`): dist_c = s·‖P(x_t) − a_t·P(x_i)‖² in expanded form
   (‖P(x_t)‖² + a_t²‖P(x_i)‖² − 2a_t⟨P(x_t), P(x_i)⟩, precision HIGHEST) for every i, with s the
   proxy scale (1, or ρ for the "repeat" ablation); keep the k_max smallest over R_b.
3. **Fine selection** (`fine_select`): the plain, unmasked ‖x_t − a_t·x_i‖² over the k_max
   survivors (expanded form, precomputed norms); keep the k_t smallest → S_t(b) [B, k_t].

Scans over N run as a ``lax.scan`` over row chunks carrying the best k values and their global
indices (`running_smallest`), so memory is O(B·(chunk + k)) besides the [B, N] pool mask. Chunks
never pad the database: the last chunk starts at N − chunk and masks the rows that the previous
chunk already covered, so no copy of the database is made.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from golddiff_jax import chunking, select as select_lib, sharding

HIGHEST = jax.lax.Precision.HIGHEST
POOL_STREAM = 0x601D  # fold-in tags separating GoldDiff's random streams within a step key
RANDOM_SUBSET_STREAM = 0x5EED

ScoreFn = Callable[[jax.Array, int], jax.Array]  # (start, size) -> scores [B, size]


def stream_keys(key: jax.Array, batch: int, stream: int) -> jax.Array:
  """Per-sample keys of one random stream within a step (not `golddiff_jax.sample_keys`, which
  makes a run's per-sample keys): fold_in(fold_in(key, stream), b) for b = 0…B−1 from one key,
  or fold_in(key[b], stream) from per-sample keys [B] (then a sample's draw ignores its batch)."""
  if key.ndim == 1:
    return jax.vmap(lambda k: jax.random.fold_in(k, stream))(key)
  key = jax.random.fold_in(key, stream)
  return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))


def _random_bits(key: jax.Array, batch: int, n: int, stream: int) -> jax.Array:
  keys = stream_keys(key, batch, stream)
  return jax.vmap(lambda k: jax.random.bits(k, (n,), jnp.uint32))(keys)


def pool_mask(key: jax.Array, batch: int, n: int, m) -> jax.Array | None:
  """[B, N] bool, exactly m True per row, uniform without replacement; None when m = N.

  ``m`` may be a traced int32 scalar (a run whose steps share one compiled function); the mask is
  then always drawn (all True when m = N).
  """
  if isinstance(m, int) and m >= n:
    return None
  return select_lib.smallest_mask(_random_bits(key, batch, n, POOL_STREAM), m)


def random_subset(key: jax.Array, batch: int, n: int, k, size: int | None = None) -> jax.Array:
  """[B, size] int32: k uniform random indices per sample from all N (random-retrieval ablation).

  ``size`` (static, default k) ≥ k pads each row: entries k … size − 1 are 0 and must be masked
  by the caller; ``k`` may then be a traced int32 scalar.
  """
  size = k if size is None else size
  if isinstance(k, int) and k >= n:
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))
  mask = select_lib.smallest_mask(_random_bits(key, batch, n, RANDOM_SUBSET_STREAM), k)
  return select_lib.mask_to_indices(mask, size)


def running_smallest(score_fn: ScoreFn, n: int, k: int, batch: int, *, chunk: int,
                     method: str = "exact", recall_target: float = 0.95):
  """The k smallest scores over rows 0…N−1, scanned in chunks with a running merge.

  Args:
    score_fn: (start, size) → scores [B, size] of rows start … start + size − 1.
    n, k, batch: static sizes.
    chunk: rows per scan step (memory only; the result does not depend on it).
    method, recall_target: the `select` strategy for each merge.

  Returns:
    (values [B, k], indices [B, k] int32 global row indices).
  """
  chunk, starts = chunking.chunk_layout(n, chunk)
  if len(starts) == 1:
    return select_lib.select(score_fn(jnp.int32(0), n), k, method=method,
                             recall_target=recall_target)

  def body(carry, inputs):
    best, best_index = carry
    step, start = inputs
    scores = jnp.where(chunking.fresh_rows(start, step, chunk)[None, :], score_fn(start, chunk),
                       jnp.inf)
    index = jnp.broadcast_to(start + jnp.arange(chunk, dtype=jnp.int32), (batch, chunk))
    merged = jnp.concatenate([best, scores], axis=1)
    merged_index = jnp.concatenate([best_index, index], axis=1)
    values, pos = select_lib.select(merged, k, method=method, recall_target=recall_target)
    return (values, jnp.take_along_axis(merged_index, pos, axis=1)), None

  init = (jnp.full((batch, k), jnp.inf, jnp.float32), jnp.zeros((batch, k), jnp.int32))
  steps = jnp.arange(len(starts), dtype=jnp.int32)
  (values, index), _ = jax.lax.scan(body, init, (steps, jnp.asarray(starts)))
  return values, index


def coarse_candidates(proxy_db: jax.Array, proxy_sq: jax.Array, x_proxy: jax.Array,
                      a: jax.Array, pool: jax.Array | None, k: int, *, scale: float = 1.0,
                      chunk: int, method: str = "exact", recall_target: float = 0.95
                      ) -> tuple[jax.Array, jax.Array]:
  """(distances [B, k], row indices [B, k] int32): the k pool members nearest in proxy space.

  Args:
    proxy_db: [N, d_p] proxy database P(X); proxy_sq: [N] its squared norms.
    x_proxy: [B, d_p] P(x_t).
    a: √ᾱ_t.
    pool: [B, N] bool pool mask, or None for the whole database. Rows outside get +inf.
    k: survivors to keep (k_max).
    scale: proxy distance scale (ρ for the "repeat" ablation).
  """
  batch = x_proxy.shape[0]
  n = proxy_db.shape[0]
  query_sq = jnp.sum(x_proxy * x_proxy, axis=1, keepdims=True)

  def score_fn(start, size):
    rows = jax.lax.dynamic_slice_in_dim(proxy_db, start, size, axis=0)
    sq = jax.lax.dynamic_slice_in_dim(proxy_sq, start, size, axis=0)
    dots = jnp.matmul(x_proxy, rows.T, precision=HIGHEST)
    dist = scale * (query_sq + (a * a) * sq[None, :] - (2.0 * a) * dots)
    if pool is None:
      return dist
    return jnp.where(jax.lax.dynamic_slice_in_dim(pool, start, size, axis=1), dist, jnp.inf)

  return running_smallest(score_fn, n, k, batch, chunk=chunk, method=method,
                          recall_target=recall_target)


def coarse_screen(proxy_db: jax.Array, proxy_sq: jax.Array, x_proxy: jax.Array, a: jax.Array,
                  pool: jax.Array | None, k: int, *, scale: float = 1.0, chunk: int,
                  method: str = "exact", recall_target: float = 0.95) -> jax.Array:
  """[B, k] int32: the k pool members with the smallest proxy distance (docs/method.md §6.2 step 7);
  arguments as `coarse_candidates`."""
  return coarse_candidates(proxy_db, proxy_sq, x_proxy, a, pool, k, scale=scale, chunk=chunk,
                           method=method, recall_target=recall_target)[1]


def fine_distances(database: jax.Array, sq_norms: jax.Array, x_t: jax.Array, a: jax.Array,
                   candidates: jax.Array, *, chunk: int) -> jax.Array:
  """[B, K] unmasked ‖x_t[b] − a·x_i‖² for i = candidates[b, :], gathered chunk by chunk."""
  batch, num = candidates.shape
  chunk, starts = chunking.chunk_layout(num, chunk)

  def body(dots, start):
    index = jax.lax.dynamic_slice_in_dim(candidates, start, chunk, axis=1)
    rows = jnp.take(database, index, axis=0)  # [B, chunk, D]
    part = jnp.einsum("bd,bcd->bc", x_t, rows, precision=HIGHEST)
    return jax.lax.dynamic_update_slice_in_dim(dots, part, start, axis=1), None

  dots, _ = jax.lax.scan(body, jnp.zeros((batch, num), jnp.float32), jnp.asarray(starts))
  query_sq = jnp.sum(x_t * x_t, axis=1, keepdims=True)
  return query_sq + (a * a) * jnp.take(sq_norms, candidates) - (2.0 * a) * dots


def ranked_select(dist: jax.Array, k: int, *, method: str = "exact",
                  recall_target: float = 0.95) -> jax.Array:
  """Positions [B, k] of the k smallest ``dist`` [B, K], nearest first, so that every prefix of
  length k' ≤ k holds the k' nearest (what a size bucket padded past k_t needs)."""
  values, pos = select_lib.select(dist, k, method=method, recall_target=recall_target)
  if method == "threshold":  # the only strategy that does not return ascending values
    pos = jnp.take_along_axis(pos, jnp.argsort(values, axis=1, stable=True), axis=1)
  return pos


def fine_select(database: jax.Array, sq_norms: jax.Array, x_t: jax.Array, a: jax.Array,
                candidates: jax.Array, k: int, *, chunk: int, method: str = "exact",
                recall_target: float = 0.95, ranked: bool = False) -> jax.Array:
  """[B, k] int32: the k candidates nearest to x_t/a in unmasked L2 (docs/method.md §6.2 step 8).

  ``ranked``: order them nearest first (`ranked_select`), so that a prefix of any length k_t is
  the k_t nearest; otherwise their order is unspecified.
  """
  if k >= candidates.shape[1] and not ranked:
    return candidates
  dist = fine_distances(database, sq_norms, x_t, a, candidates, chunk=chunk)
  pos = ranked_select(dist, k, method=method, recall_target=recall_target) if ranked else (
      select_lib.select(dist, k, method=method, recall_target=recall_target)[1])
  return jnp.take_along_axis(candidates, pos, axis=1)


def golden_subset(database: jax.Array, sq_norms: jax.Array, proxy_db: jax.Array,
                  proxy_sq: jax.Array, x_t: jax.Array, x_proxy: jax.Array, a: jax.Array,
                  key: jax.Array, *, m, k: int, survivors: int, scale: float = 1.0,
                  coarse_chunk: int, fine_chunk: int, method: str = "exact",
                  recall_target: float = 0.95, ranked: bool = False) -> jax.Array:
  """S_t [B, k] int32: pre-sample m, keep ``survivors`` by proxy distance, then k by L2.

  ``m`` may be traced (then ``survivors`` ≤ m is the caller's promise); ``ranked`` orders the
  subset nearest first (`fine_select`).
  """
  batch = x_t.shape[0]
  n = database.shape[0]
  pool = pool_mask(key, batch, n, m)
  keep = min(survivors, m) if isinstance(m, int) else survivors
  candidates = coarse_screen(proxy_db, proxy_sq, x_proxy, a, pool, keep,
                             scale=scale, chunk=coarse_chunk, method=method,
                             recall_target=recall_target)
  return fine_select(database, sq_norms, x_t, a, candidates, k, chunk=fine_chunk,
                     method=method, recall_target=recall_target, ranked=ranked)


# ---- sharded database (inside `jax.shard_map`; see `golddiff_jax.sharding`) ------------------

def pool_bits(key: jax.Array, batch: int, num_rows: int, num_valid: int) -> jax.Array:
  """[B, num_rows] uint32 pool keys of `pool_mask`, with padding rows (≥ num_valid) at the maximum.

  Row i's key is the same for any num_rows ≥ i (counter-based threefry), so a database padded for
  any device count draws the same pool as the unpadded one.
  """
  bits = _random_bits(key, batch, num_rows, POOL_STREAM)
  return jnp.where(jnp.arange(num_rows) < num_valid, bits, jnp.uint32(0xFFFFFFFF))


def golden_subset_shard(database: jax.Array, sq_norms: jax.Array, proxy_db: jax.Array,
                        proxy_sq: jax.Array, x_t: jax.Array, x_proxy: jax.Array, a: jax.Array,
                        bits: jax.Array | None, *, num_valid: int, m, k: int,
                        survivors: int, scale: float = 1.0, coarse_chunk: int, fine_chunk: int,
                        method: str = "exact", recall_target: float = 0.95,
                        ranked: bool = False) -> jax.Array:
  """`golden_subset` on one shard of the rows; every shard returns the same global S_t [B, k].

  The pool is the global m smallest of ``bits`` (this shard's columns of `pool_bits`; None when
  m ≥ N). Each shard screens its own rows, keeps its best survivors with their global indices and
  their full-resolution distances (it holds those rows), and `sharding.merge_smallest` picks the
  global survivors; the k nearest of them in L2 form the subset, as on one device.
  """
  num_local = database.shape[0]
  offset, valid = sharding.local_rows(num_local, num_valid)
  batch = x_t.shape[0]
  if bits is None:
    pool = jnp.broadcast_to(valid, (batch, num_local))
  else:
    pool = select_lib.smallest_mask(bits, m, axis_name=sharding.DATA)
  keep = min(survivors, m) if isinstance(m, int) else survivors
  values, local = coarse_candidates(proxy_db, proxy_sq, x_proxy, a, pool, min(keep, num_local),
                                    scale=scale, chunk=coarse_chunk, method=method,
                                    recall_target=recall_target)
  fine = fine_distances(database, sq_norms, x_t, a, local, chunk=fine_chunk)
  fine = jnp.where(jnp.isfinite(values), fine, jnp.inf)
  _, index, fine = sharding.merge_smallest(values, local + offset, keep, extra=(fine,))
  if k >= keep and not ranked:
    return index
  pos = ranked_select(fine, k, method=method, recall_target=recall_target) if ranked else (
      select_lib.select(fine, k, method=method, recall_target=recall_target)[1])
  return jnp.take_along_axis(index, pos, axis=1)
