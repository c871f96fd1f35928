"""Golden-subset ELS: the ELS machine (`golddiff_jax.denoisers.els`) over GoldDiff's time-aware
subset, the plug-in use of the golden subset that the GoldDiff paper describes.

Each step retrieves, per sample, a golden subset S_t(b) of k_t training images exactly as GoldDiff
does (random pool of m_t → k_max proxy survivors → k_t nearest in unmasked L2;
`golddiff.golden_subset`, `retrieval.golden_subset_shard`, budgets from `golddiff_jax.budgets`),
and the ELS patch softmax of sample b then runs over the windows of those k_t images only:

    x̂_0[b, h, w, :] = Σ_{p ∈ windows(S_t(b))} softmax_p(−‖Π_hw(x_t[b]) − a_t·p‖² / (2σ_t² T)) centre(p)

With k_t = N (k_min = k_max = N) the subset is the whole database and the result is full ELS.
The cost falls from B·N to B·k_t images' worth of windows per step, plus GoldDiff's retrieval.

Options: `Options`, the ELS window options (`els.PatchOptions`), the temperature and GoldDiff's
retrieval options (`golddiff.RetrievalOptions`: the same names, defaults and checks);
``subset_chunk_size`` is also the number of subset images per step of the ELS softmax (None: the
ELS automatic chunk). Reference: docs/options.md.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from golddiff_jax import chunking, sharding, softmax
from golddiff_jax.denoisers import base, els, golddiff
from golddiff_jax.stats import Stats


@dataclasses.dataclass(frozen=True)
class Options(golddiff.RetrievalOptions, els.PatchOptions, base.TemperatureOptions):
  pass


@flax.struct.dataclass
class Plan:
  """One step: GoldDiff's retrieval plan (no locality mask) and the ELS plan."""
  retrieval: golddiff.Plan
  els: els.Plan

  @property
  def abar(self):
    return self.els.abar


def prepare_run(stats: Stats, abars, options: Options, batch: int) -> list[Plan]:
  """GoldDiff's retrieval plans (budgets, proxy database once per run; no locality masks, and
  every step retrieves) and one ELS plan per step (the subset is streamed in
  ``subset_chunk_size`` images, default: the ELS automatic chunk)."""
  retrievals = golddiff.prepare_run(stats, abars, options, batch)
  plans = []
  for abar, size, ret in zip(abars, els.patch_sizes(options.patch_size, len(abars)), retrievals):
    step = els.build_plan(stats.image_shape, abar, size, batch, padding=options.padding,
                          temperature=options.temperature, chunk_size=options.subset_chunk_size)
    plans.append(Plan(retrieval=ret, els=step))
  return plans


def prepare(stats: Stats, abar: float, options: Options, batch: int) -> Plan:
  return prepare_run(stats, [abar], options, batch)[0]


# ---- per-sample ELS over each sample's own images ---------------------------------------------

def _sample_queries(x_t: jax.Array, plan: els.Plan, image_shape):
  """Each sample's query side (leaves with a leading sample axis)."""
  return jax.vmap(lambda x: els.queries(x.reshape(1, *image_shape), plan))(x_t)


def _init(plan: els.Plan, image_shape, batch: int):
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (batch, *a.shape)),
                      els.init_states(plan, image_shape, 1))


def _fold(states, qs, rows: jax.Array, valid: jax.Array, plan: els.Plan, image_shape):
  """Folds each sample's own images ``rows`` [B, c, D] (``valid`` [B, c]) into its state."""
  def one(state, q, rows, valid):
    images = rows.reshape(rows.shape[0], *image_shape)
    return els.fold(state, q, images, valid, plan, 1)
  return jax.vmap(one)(states, qs, rows, valid)


def _assemble(states, plan: els.Plan, image_shape) -> softmax.SoftmaxState:
  state = jax.vmap(lambda s: els.assemble(s, plan, image_shape))(states)
  return jax.tree.map(lambda a: a[:, 0], state)  # [B, P, ·]


def aggregate(database: jax.Array, subset: jax.Array, x_t: jax.Array, plan: els.Plan,
              image_shape, count: jax.Array | None = None) -> softmax.SoftmaxState:
  """ELS softmax state of each sample over its images ``subset`` [B, K] (state [B, P, ·]).

  Only the first ``count`` entries of a row count (traced; None: all K, as GoldDiff's padded
  subsets); the chunks past them are not computed.
  """
  qs = _sample_queries(x_t, plan, image_shape)
  states = chunking.fold_subset(
      database, subset, plan.chunk_size, count,
      lambda states, rows, valid: _fold(states, qs, rows, valid, plan, image_shape),
      _init(plan, image_shape, subset.shape[0]))
  return _assemble(states, plan, image_shape)


def _count(ret: golddiff.Plan):
  return ret.k if ret.ranked else None


def apply(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D]. ``key`` drives GoldDiff's pre-sampling (None: key 0)."""
  key = jax.random.key(0) if key is None else key
  subset = golddiff.golden_subset(stats, plan.retrieval, x_t, key)
  state = aggregate(stats.database, subset, x_t, plan.els, stats.image_shape,
                    _count(plan.retrieval))
  return els.finalize(state)


def aggregate_shard(database: jax.Array, subset: jax.Array, x_t: jax.Array, plan: els.Plan,
                    image_shape, offset: jax.Array,
                    count: jax.Array | None = None) -> softmax.SoftmaxState:
  """`aggregate` inside ``shard_map`` with the rows sharded over ``data``: each shard folds its
  reduce-scattered share of the subset rows (`sharding.fold_subset_rows`, as GoldDiff's
  aggregation does), and the per-shard states merge with ``pmax``/``psum``."""
  qs = _sample_queries(x_t, plan, image_shape)
  states = sharding.fold_subset_rows(
      database, subset, offset, plan.chunk_size, count,
      lambda states, rows, mine: _fold(states, qs, rows, mine, plan, image_shape),
      _init(plan, image_shape, subset.shape[0]))
  return sharding.combine_softmax(_assemble(states, plan, image_shape))


def plan_specs(plan: Plan):
  """The proxy database is sharded like the database; everything else replicated."""
  return Plan(retrieval=golddiff.plan_specs(plan.retrieval),
              els=sharding.replicated_specs(plan.els))


def _aggregate_step(stats: Stats, plan: Plan, subset, x_t, offset) -> jax.Array:
  return els.finalize(aggregate_shard(stats.database, subset, x_t, plan.els, stats.image_shape,
                                      offset, _count(plan.retrieval)))


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database sharded over ``mesh``; the subset is GoldDiff's sharded retrieval
  (`golddiff.apply_retrieved_sharded`: the same as on one device)."""
  return golddiff.apply_retrieved_sharded(stats, plan, x_t, key, mesh,
                                          retrieval_of=lambda p: p.retrieval, specs=plan_specs,
                                          aggregate_shard_fn=_aggregate_step)


base.register("els_golden", options=Options, prepare_run=prepare_run, apply=apply,
              apply_sharded=apply_sharded, plan_specs=plan_specs)
