"""Closed-form high-noise steps: the masked softmax over all N images to first order in its logits.

At high noise (ᾱ_t ≲ 0.007, t ≥ 700 on the DDPM schedule) the PCA-locality logits of one output
coordinate m,

    ℓ_i[m] = −s Σ_n M[n, m] (x[n] − a y_i[n])²,   a = √ᾱ_t,  s = 1 / (2 σ_t² T),

differ across the N database images y_i by well under one unit, so the softmax-weighted mean is
close to the plain mean. Writing ℓ_i = ℓ̄ + δ_i and expanding e^{δ} to first order,

    x̂[m] = Σ_i e^{ℓ_i} y_i[m] / Σ_i e^{ℓ_i} ≈ ȳ[m] + Cov_i(ℓ_i[m], y_i[m])
          = ȳ[m] + 2as Σ_n M[n, m] C[n, m] x[n] − a²s Σ_n M[n, m] Q[n, m],

with the database mean ȳ, covariance C[n, m] = Cov(y[n], y[m]) and Q[n, m] = Cov(y[n]², y[m]) (all
over the N images, normalised by N; the term of ℓ that does not depend on i cancels). The moments
are computed once per run from the database (`database_moments`, O(N·D²)); each step then costs
one [B, D] × [D, D] product, independent of N and of any budget. The neglected terms are second
order in δ: the error shrinks like a² at fixed x (tested), and docs/benchmarks.md measures where
it beats GoldDiff's random pool of k_max images (whose error is a Monte-Carlo error of order
1/√k_max, independent of a).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


@flax.struct.dataclass
class Moments:
  """Database moments for the expansion: mean ȳ [D], C [D, D] and Q [D, D] (see module doc)."""
  mean: jax.Array
  cov: jax.Array
  skew: jax.Array


@flax.struct.dataclass
class Expansion:
  """One step's expansion: x̂ = mean + x @ weight + bias."""
  mean: jax.Array     # [D]
  weight: jax.Array   # [D, D] = 2as · (M ⊙ C)
  bias: jax.Array     # [D]    = −a²s · Σ_n (M ⊙ Q)[n, :]


@jax.jit
def _moments(database: jax.Array, valid: jax.Array) -> Moments:
  weight = valid.astype(database.dtype)[:, None]
  count = jnp.sum(weight)
  mean = jnp.sum(database * weight, axis=0) / count
  centred = (database - mean) * weight
  cov = jnp.matmul(centred.T, centred, precision=HIGHEST) / count
  square = database * database
  square_mean = jnp.sum(square * weight, axis=0) / count
  skew = jnp.matmul(((square - square_mean) * weight).T, centred, precision=HIGHEST) / count
  return Moments(mean=mean, cov=cov, skew=skew)


def database_moments(database: jax.Array, num_valid: int | None = None) -> Moments:
  """`Moments` of the first ``num_valid`` rows of ``database`` [N, D] (all rows when None; the
  rest are a sharded database's padding). Works on a sharded database as it is."""
  rows = database.shape[0]
  num_valid = rows if num_valid is None else int(num_valid)
  if not 1 <= num_valid <= rows:
    raise ValueError(f"num_valid must be in [1, {rows}], got {num_valid}")
  return _moments(database, jnp.arange(rows) < num_valid)


@jax.jit
def _prepare(moments: Moments, mask: jax.Array, abar, temperature) -> Expansion:
  a = jnp.sqrt(abar)
  s = 0.5 / ((1.0 - abar) * temperature)
  return Expansion(mean=moments.mean, weight=(2.0 * a * s) * (mask * moments.cov),
                   bias=-(a * a * s) * jnp.sum(mask * moments.skew, axis=0))


def prepare(moments: Moments, mask: jax.Array, abar: float, temperature: float = 1.0
            ) -> Expansion:
  """The step's `Expansion` for the 0/1 locality mask [D, D] at noise level ᾱ = ``abar``."""
  if not 0.0 < float(abar) < 1.0:
    raise ValueError(f"abar must be in (0, 1), got {abar!r}")
  if not float(temperature) > 0.0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}")
  return _prepare(moments, jnp.asarray(mask, jnp.float32), jnp.float32(abar),
                  jnp.float32(temperature))


def apply(expansion: Expansion, x_t: jax.Array) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D] (pure, jit-able)."""
  return (expansion.mean + expansion.bias
          + jnp.matmul(x_t, expansion.weight, precision=HIGHEST))
