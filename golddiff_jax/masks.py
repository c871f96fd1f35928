"""PCA-locality masks (spec §3, §4.3) and their dense, tiled and sparse forms.

For a noise level ᾱ the Wiener operator is L̃ = V diag(s) Vᵀ with s = ᾱλ/(σ² + ᾱλ), σ² = 1 − ᾱ.
The mask is L̃ with each row n divided by its diagonal L̃[n, n] (quirk Q-1: a diagonal entry with
magnitude below 1e-6 is replaced by 1, in L̃ too), then binarised with the global relative threshold
|M̃| ≥ θ·max|M̃|. Column m of the mask lists the inputs n that feed output coordinate m, so the
masked distance is ``delta @ M`` (contraction over the row index).

Masks are built once per sampling run on the accelerator (float32, precision HIGHEST) and then
converted on the host into the static structure that the chosen contraction needs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_DIAG_EPS = 1e-6
HIGHEST = jax.lax.Precision.HIGHEST


def shrink_factors(eigvals: jax.Array, abar) -> jax.Array:
  """s_i = ᾱλ_i / (σ² + ᾱλ_i) with σ² = 1 − ᾱ."""
  abar = jnp.asarray(abar, jnp.float32)
  scaled = abar * eigvals
  return scaled / ((1.0 - abar) + scaled)


@jax.jit
def wiener_operator(eigvals: jax.Array, eigvecs: jax.Array, abar) -> jax.Array:
  """L̃ = V diag(s) Vᵀ, [D, D]."""
  s = shrink_factors(eigvals, abar)
  return jnp.matmul(eigvecs * s[None, :], eigvecs.T, precision=HIGHEST)


@functools.partial(jax.jit, static_argnames=("binary",))
def mask_from_operator(operator: jax.Array, threshold, *, binary: bool = True) -> jax.Array:
  """Row-normalises L̃ by its diagonal (with Q-1) and thresholds it; returns M [D, D] float32."""
  diag = jnp.diagonal(operator)
  small = jnp.abs(diag) < _DIAG_EPS
  diag = jnp.where(small, 1.0, diag)
  idx = jnp.arange(operator.shape[0])
  operator = operator.at[idx, idx].set(diag)  # the replacement is written into L̃ as well.
  normalised = operator / diag[:, None]
  if not binary:
    return normalised
  magnitude = jnp.abs(normalised)
  tau = threshold * jnp.max(magnitude)
  return (magnitude >= tau).astype(jnp.float32)


def locality_mask(eigvals: jax.Array, eigvecs: jax.Array, abar: float,
                  threshold: float) -> jax.Array:
  """The binary PCA-locality mask M_t [D, D] (float32 0/1) at noise level ᾱ = ``abar``."""
  return mask_from_operator(wiener_operator(eigvals, eigvecs, abar), threshold)


def sparse_form(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-output index lists: column m → (idx[m, :], valid[m, :]) with P = max column count.

  Padding slots point at input 0 with ``valid`` False; the lists are in increasing input order.
  """
  mask = np.asarray(mask) != 0
  d = mask.shape[0]
  counts = mask.sum(axis=0)
  width = max(int(counts.max()), 1)
  idx = np.zeros((d, width), np.int32)
  valid = np.zeros((d, width), bool)
  cols, rows = np.nonzero(mask.T)  # sorted by column, then row
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = np.arange(rows.size) - starts[cols]
  idx[cols, slot] = rows
  valid[cols, slot] = True
  return idx, valid


def dense_from_sparse(idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Inverse of `sparse_form`."""
  d = idx.shape[0]
  mask = np.zeros((d, d), np.float32)
  cols = np.broadcast_to(np.arange(d)[:, None], idx.shape)
  mask[idx[valid], cols[valid]] = 1.0
  return mask
