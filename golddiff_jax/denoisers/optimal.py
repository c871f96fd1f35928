"""Optimal (empirical-Bayes) denoiser: the exact posterior mean under the empirical data
(docs/method.md §5.1).

x̂_0 = Σ_i softmax_i(−‖x_t − a_t x_i‖² / (2σ_t² T)) · x_i over the whole database, streamed in chunks.
The squared distance is computed in direct (difference) form: at t = 0 the logits reach ~1e6, and the
expanded ‖x‖² + a²‖x_i‖² − 2a⟨x, x_i⟩ form would lose the digits the softmax needs.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from golddiff_jax import chunking, sharding, softmax, validation
from golddiff_jax.denoisers import base
from golddiff_jax.stats import Stats

_CHUNK_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class Options(base.TemperatureOptions):
  chunk_size: int | None = base.option(
      None, "Database rows per step of the streamed scan (memory only; None: from a 64 MiB "
      "budget).")

  def check(self) -> None:
    super().check()
    validation.check_optional_positive_int(self.chunk_size, name=base.name("chunk_size"))


@flax.struct.dataclass
class Plan:
  abar: jax.Array
  temperature: float = flax.struct.field(pytree_node=False)
  chunk_size: int = flax.struct.field(pytree_node=False)


def prepare(stats: Stats, abar: float, options: Options, batch: int) -> Plan:
  chunk = options.chunk_size or max(8, _CHUNK_BYTES // (4 * batch * stats.dim))
  return Plan(abar=jnp.float32(abar), temperature=float(options.temperature),
              chunk_size=int(chunk))


def local_state(database: jax.Array, plan: Plan, x_t: jax.Array,
                row_valid: jax.Array | None = None) -> softmax.SoftmaxState:
  """Online-softmax statistics of x_t [B, D] over the rows of ``database`` (valid ones only)."""
  a = jnp.sqrt(plan.abar)
  scale = -0.5 / ((1.0 - plan.abar) * plan.temperature)

  def logits_fn(chunk):
    diff = x_t[:, None, :] - a * chunk[None, :, :]
    # A dot-product reduction accumulates in blocks: more accurate than a plain float32 sum over D.
    sq = jnp.einsum("bcd,bcd->bc", diff, diff, precision=jax.lax.Precision.HIGHEST)
    return (scale * sq)[..., None]

  return chunking.softmax_average(database, logits_fn, batch=x_t.shape[0], num_softmaxes=1,
                                  chunk_size=plan.chunk_size, row_valid=row_valid)


def apply(stats: Stats, plan: Plan, x_t: jax.Array,
          key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D] (deterministic: ``key`` is unused)."""
  del key
  return softmax.finalize(local_state(stats.database, plan, x_t))


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database sharded over ``mesh`` (`golddiff_jax.sharding`)."""
  del key
  return sharding.softmax_over_shards(local_state, stats, plan, x_t, mesh)


base.register("optimal", options=Options, prepare=prepare, apply=apply,
              apply_sharded=apply_sharded)
