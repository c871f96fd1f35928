"""Streaming over the database: a ``lax.scan`` over fixed-size chunks with a softmax accumulator.

Memory is O(B·chunk·D) whatever N is. N need not divide by the chunk size: the last chunk is
padded and its padding rows get logit −inf, so they carry no weight (and, for WSSM, a partial last
chunk still counts as one chunk, as in the published baseline).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from golddiff_jax import softmax

LogitsFn = Callable[[jax.Array], jax.Array]  # chunk [c, D] -> logits [B, c, K]


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
