"""Chunk layouts: how rows (of the database, or of each sample's subset) are walked in chunks, the
one home of the three layouts the code uses, and the walks built on them.

* padded (`split_chunks`, `softmax_average`): N rows → ⌈N/c⌉ chunks of c, the last one padded
  with rows of logit −inf (for WSSM a partial last chunk still counts as one chunk, as in the
  published baseline); memory O(B·c·D) whatever N is;
* clamped (`chunk_layout`, `fresh_rows`, `fold_subset`): balanced chunks whose last start is
  clamped to N − c, the rows it covers twice masked out — no padding copy, one static shape;
* sharded (`chunk_for`, `chunk_trips`): a subset walked in blocks of c·S entries over S shards
  (`golddiff_jax.sharding.fold_subset_rows`).

The layout decides the order of floating-point sums, so each walk keeps its own.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import softmax

LogitsFn = Callable[[jax.Array], jax.Array]  # chunk [c, D] -> logits [B, c, K]


def chunk_layout(n: int, chunk: int) -> tuple[int, np.ndarray]:
  """(chunk, starts): at most ``chunk`` rows per step, balanced so that the count of steps is
  minimal and the rows the clamped last start covers twice are fewer than the count;
  starts min(j·chunk, n − chunk)."""
  chunk = max(1, min(int(chunk), n))
  count = -(-n // chunk)
  chunk = -(-n // count)
  starts = np.minimum(np.arange(count) * chunk, n - chunk).astype(np.int32)
  return chunk, starts


def fresh_rows(start: jax.Array, step: jax.Array, chunk: int) -> jax.Array:
  """[chunk] bool: rows of a chunk not already covered by the previous one (clamped start)."""
  return start + jnp.arange(chunk) >= step * chunk


def chunk_for(total: int, chunk: int, shards: int) -> tuple[int, int]:
  """(per-shard chunk c, padded total): ``total`` items walked in steps of c·shards."""
  chunk = max(1, min(int(chunk), math.ceil(total / shards)))
  step = chunk * shards
  return chunk, -(-total // step) * step


def chunk_trips(count, chunk: int, num_chunks: int):
  """Chunks of ``chunk`` subset entries needed to cover the first ``count`` (traced) entries of
  every row; all ``num_chunks`` for None."""
  if count is None:
    return num_chunks
  return jnp.clip((count + chunk - 1) // chunk, 0, num_chunks)


def fold_subset(database: jax.Array, subset: jax.Array, chunk_size: int, count, fold, init):
  """Folds every sample's own database rows ``subset`` [B, K] (row indices) into ``init``, in
  chunks of at most ``chunk_size`` entries (`chunk_layout`): ``fold(carry, rows [B, c, D],
  valid [B, c]) -> carry``. Only the first ``count`` entries of a row count (traced int32; None:
  all K) and the chunks past them are not computed. The sharded form is
  `golddiff_jax.sharding.fold_subset_rows`."""
  batch, size = subset.shape
  chunk, starts = chunk_layout(size, chunk_size)
  starts = jnp.asarray(starts)
  limit = size if count is None else count

  def body(step, carry):
    start = starts[step]
    index = jax.lax.dynamic_slice_in_dim(subset, start, chunk, axis=1)
    rows = jnp.take(database, index, axis=0)  # [B, c, D]
    valid = fresh_rows(start, step, chunk) & (start + jnp.arange(chunk) < limit)
    return fold(carry, rows, jnp.broadcast_to(valid, (batch, chunk)))

  return jax.lax.fori_loop(0, chunk_trips(count, chunk, starts.shape[0]), body, init)


def split_chunks(database: jax.Array, chunk_size: int,
                 row_valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """[N, D] → chunks [n, c, D] and validity [n, c] (padding rows at the end).

  ``row_valid`` [N] marks rows that hold images (e.g. not a sharded database's padding).
  """
  n, d = database.shape
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n
  padded = jnp.pad(database, ((0, pad), (0, 0)))
  valid = jnp.arange(num_chunks * chunk_size) < n
  if row_valid is not None:
    valid = valid & jnp.pad(row_valid, (0, pad))
  return (padded.reshape(num_chunks, chunk_size, d),
          valid.reshape(num_chunks, chunk_size))


def softmax_average(database: jax.Array, logits_fn: LogitsFn, *, batch: int,
                    num_softmaxes: int, chunk_size: int, mode: str = "exact",
                    state: softmax.SoftmaxState | None = None,
                    row_valid: jax.Array | None = None,
                    weighted=None, axis: int = 1) -> softmax.SoftmaxState:
  """Σ_i softmax_i(logits) · x_i over every database row, chunk by chunk.

  Args:
    database: [N, D] candidate values x_i.
    logits_fn: maps a chunk [c, D] to logits [B, c, K]; K = 1 or D.
    batch, num_softmaxes: B and K.
    chunk_size: rows per chunk (memory only in exact mode; the WSSM chunk in wssm mode).
    mode: "exact" or "wssm".
    state: an accumulator to continue from (e.g. another shard's).
    row_valid: optional [N] bool; rows marked False carry no weight (a shard's padding).
    weighted, axis: for a logits layout other than [B, c, K] (`softmax`): Σ_i p·value for it,
      and the candidate axis; ``state`` must then be given in the matching layout.

  Returns:
    The accumulator state; `softmax.finalize` turns it into [B, D].
  """
  update = functools.partial(
      {"exact": softmax.update_exact, "wssm": softmax.update_wssm}[mode], axis=axis)
  if weighted is not None:
    update = functools.partial(update, weighted=weighted)
  chunks, valid = split_chunks(database, min(chunk_size, database.shape[0]), row_valid)
  if state is None:
    state = softmax.init(batch, num_softmaxes, database.shape[1], database.dtype)

  def body(carry, inputs):
    chunk, chunk_valid = inputs
    logits = logits_fn(chunk)
    shape = [1] * logits.ndim
    shape[axis] = -1
    logits = jnp.where(chunk_valid.reshape(shape), logits, -jnp.inf)
    return update(carry, logits, chunk), None

  state, _ = jax.lax.scan(body, state, (chunks, valid))
  return state
