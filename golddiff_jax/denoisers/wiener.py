"""Wiener filter: the linear Gaussian posterior mean (docs/method.md §5.2).

x̂_0 = μ + L̃_t (x_t/a_t − μ) with L̃_t = V diag(s_t) Vᵀ. It is applied in the eigenbasis,
((x_t/a_t − μ) V) diag(s_t) Vᵀ, which is O(B·D²) and never forms the D×D operator. Option
``eig_floor`` δ floors the covariance eigenvalues, λ ← max(λ, δ), as the locality masks do
(`golddiff_jax.masks`); 0 is the published filter.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from golddiff_jax import masks
from golddiff_jax.stats import Stats

OPTIONS = {"eig_floor": 0.0}
HIGHEST = jax.lax.Precision.HIGHEST


@flax.struct.dataclass
class Plan:
  abar: jax.Array
  eig_floor: jax.Array


def check_options(options: dict) -> None:
  masks.check_mask_options({"eig_floor": options["eig_floor"]})


def prepare(stats: Stats, abar: float, options: dict, batch: int) -> Plan:
  del stats, batch
  return Plan(abar=jnp.float32(abar),
              eig_floor=jnp.float32(options.get("eig_floor", OPTIONS["eig_floor"])))


def apply(stats: Stats, plan: Plan, x_t: jax.Array,
          key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D] (deterministic: ``key`` is unused)."""
  del key
  centred = x_t / jnp.sqrt(plan.abar) - stats.mean
  coeffs = jnp.matmul(centred, stats.eigvecs, precision=HIGHEST)
  coeffs = coeffs * masks.shrink_factors(masks.floored(stats.eigvals, plan.eig_floor), plan.abar)
  return stats.mean + jnp.matmul(coeffs, stats.eigvecs.T, precision=HIGHEST)


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """Wiener never reads the database: the same computation, partitioned by the compiler (queries
  follow their sharding)."""
  del mesh
  return apply(stats, plan, x_t, key)
