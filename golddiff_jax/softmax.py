"""Softmax-weighted averages over candidates that arrive in chunks (docs/method.md §5.4).

Two accumulators share one state layout (max, sum, numerator) per (sample, coordinate); exact
states over disjoint candidate sets merge with `combine` (two states) or `combine_across` (one per
device along a mesh axis). This module is the one home of the softmax-state arithmetic.

* exact (GoldDiff's ``StreamingSoftmax``): a running max rescales earlier chunks, so the result is
  the softmax over all candidates whatever the chunking;
* WSSM (the published PCA baseline): each chunk gets its own softmax and the per-chunk posterior
  means are averaged with equal weight, so it depends on the chunking.

Logits have shape [B, c, K] with K = 1 (one softmax per sample, e.g. the optimal denoiser) or
K = D (one softmax per coordinate); values have shape [c, D]. Invalid (padding) candidates carry
logit −inf and contribute nothing; a chunk with no valid candidate leaves the state unchanged.
Other layouts work too, with the candidate axis given as ``axis`` and a ``weighted`` (Σ_i p·value)
that matches them: the tiled PCA-locality form uses logits [groups, G, B, c].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EPS = 1e-8
HIGHEST = jax.lax.Precision.HIGHEST


class SoftmaxState(NamedTuple):
  """Running statistics: max r [B, K], sum s [B, K], numerator y [B, D]."""
  max: jax.Array
  total: jax.Array
  numerator: jax.Array


def init(batch: int, num_softmaxes: int, dim: int, dtype=jnp.float32) -> SoftmaxState:
  return SoftmaxState(
      max=jnp.full((batch, num_softmaxes), -jnp.inf, dtype),
      total=jnp.zeros((batch, num_softmaxes), dtype),
      numerator=jnp.zeros((batch, dim), dtype))


def _weighted_values(p: jax.Array, values: jax.Array) -> jax.Array:
  """Σ_i p[b, i, k] · values[i, m] → [B, D] (k broadcast against m)."""
  if p.shape[-1] == 1:
    return jnp.matmul(p[..., 0], values, precision=HIGHEST)
  return jnp.einsum("bim,im->bm", p, values, precision=HIGHEST)


def _finite_or_zero(x: jax.Array) -> jax.Array:
  return jnp.where(jnp.isfinite(x), x, 0.0)


def update_exact(state: SoftmaxState, logits: jax.Array, values: jax.Array,
                 weighted=_weighted_values, axis: int = 1) -> SoftmaxState:
  """Folds one chunk into the exact online softmax (candidates on ``axis`` of ``logits``)."""
  new_max = jnp.maximum(state.max, jnp.max(logits, axis=axis))
  shift = _finite_or_zero(new_max)  # all-(−inf) so far: nothing to rescale.
  scale = jnp.exp(state.max - shift)
  p = jnp.exp(logits - jnp.expand_dims(shift, axis))
  total = state.total * scale + jnp.sum(p, axis=axis)
  numerator = state.numerator * scale + weighted(p, values)
  return SoftmaxState(new_max, total, numerator)


def update_wssm(state: SoftmaxState, logits: jax.Array, values: jax.Array,
                weighted=_weighted_values, axis: int = 1) -> SoftmaxState:
  """Adds one chunk's local softmax average (weights sum to 1 per chunk) to the state."""
  chunk_max = _finite_or_zero(jnp.max(logits, axis=axis))
  p = jnp.exp(logits - jnp.expand_dims(chunk_max, axis))
  chunk_total = jnp.sum(p, axis=axis)
  w = p / jnp.expand_dims(jnp.where(chunk_total > 0, chunk_total, 1.0), axis)
  return SoftmaxState(state.max, state.total + jnp.sum(w, axis=axis),
                      state.numerator + weighted(w, values))


def finalize(state: SoftmaxState) -> jax.Array:
  """y / (s + 1e−8), the published normalisation; [B, D]."""
  return state.numerator / (state.total + EPS)


def _scale_to(state: SoftmaxState, new_max: jax.Array) -> jax.Array:
  """exp(r − r_new): rescales a state's sum and numerator to the merged max."""
  return jnp.exp(state.max - _finite_or_zero(new_max))


def combine(a: SoftmaxState, b: SoftmaxState) -> SoftmaxState:
  """Merges two exact states computed over disjoint candidate sets."""
  new_max = jnp.maximum(a.max, b.max)
  sa, sb = _scale_to(a, new_max), _scale_to(b, new_max)
  return SoftmaxState(new_max, a.total * sa + b.total * sb,
                      a.numerator * sa + b.numerator * sb)


def combine_across(state: SoftmaxState, axis_name: str) -> SoftmaxState:
  """`combine` of every device's exact state along the mesh axis ``axis_name`` (inside
  ``shard_map``; ``pmax``/``psum``): the state over all devices' candidates, on each device."""
  new_max = jax.lax.pmax(state.max, axis_name)
  scale = _scale_to(state, new_max)
  return SoftmaxState(new_max, jax.lax.psum(state.total * scale, axis_name),
                      jax.lax.psum(state.numerator * scale, axis_name))
