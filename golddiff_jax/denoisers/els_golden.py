"""Golden-subset ELS: the ELS machine (`golddiff_jax.denoisers.els`) over GoldDiff's time-aware
subset, the plug-in use of the golden subset that the GoldDiff paper describes.

Each step retrieves, per sample, a golden subset S_t(b) of k_t training images exactly as GoldDiff
does (random pool of m_t → k_max proxy survivors → k_t nearest in unmasked L2;
`golddiff.golden_subset`, `retrieval.golden_subset_shard`, budgets from `golddiff_jax.budgets`),
and the ELS patch softmax of sample b then runs over the windows of those k_t images only:

    x̂_0[b, h, w, :] = Σ_{p ∈ windows(S_t(b))} softmax_p(−‖Π_hw(x_t[b]) − a_t·p‖² / (2σ_t² T)) centre(p)

With k_t = N (k_min = k_max = N) the subset is the whole database and the result is full ELS.
The cost falls from B·N to B·k_t images' worth of windows per step, plus GoldDiff's retrieval.

Options: the ELS options ``patch_size`` (odd int or per-step schedule), ``padding``,
``temperature``; GoldDiff's budgets and switches with the same names and defaults (``k_min``,
``k_max``, ``low_res_dim``, ``select``, ``recall_target``, ``dynamic_m``/``dynamic_k``/
``static_m``/``static_k``, ``random_retrieval``, ``proxy_repeat_factor``,
``proxy_upsample_mode``); ``chunk_size`` (rows per step of the coarse scan, as GoldDiff) and
``subset_chunk_size`` (subset images per step of the fine selection and of the ELS softmax).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from golddiff_jax import chunking, retrieval, sharding, softmax
from golddiff_jax.denoisers import els, golddiff
from golddiff_jax.stats import Stats

_RETRIEVAL = ("k_min", "k_max", "low_res_dim", "select", "recall_target", "dynamic_m",
              "dynamic_k", "static_m", "static_k", "random_retrieval", "proxy_repeat_factor",
              "proxy_upsample_mode", "chunk_size", "subset_chunk_size")
OPTIONS = {"patch_size": els.OPTIONS["patch_size"], "padding": els.OPTIONS["padding"],
           "temperature": 1.0, **{name: golddiff.OPTIONS[name] for name in _RETRIEVAL}}


@flax.struct.dataclass
class Plan:
  """One step: GoldDiff's retrieval plan (no locality mask) and the ELS plan."""
  retrieval: golddiff.Plan
  els: els.Plan

  @property
  def abar(self):
    return self.els.abar


def _retrieval_options(options: dict) -> dict:
  """GoldDiff options for the retrieval alone (its mask options at their defaults; the
  high-noise expansion is a PCA-locality closed form, so every step retrieves)."""
  return {**{n: options[n] for n in _RETRIEVAL}, "temperature": options["temperature"],
          "high_noise": "pool"}


def check_options(options: dict) -> None:
  els.check_options(options)
  golddiff.check_options({**golddiff.OPTIONS, **_retrieval_options(options)})


def prepare_run(stats: Stats, abars, options: dict, batch: int) -> list[Plan]:
  """GoldDiff's retrieval plans (budgets, proxy database once per run; the locality masks they
  build are dropped) and one ELS plan per step (the subset is streamed in ``subset_chunk_size``
  images, default: the ELS automatic chunk)."""
  options = {**OPTIONS, **options}
  check_options(options)
  retrievals = golddiff.prepare_run(stats, abars, _retrieval_options(options), batch)
  plans = []
  for abar, size, ret in zip(abars, els.patch_sizes(options, len(abars)), retrievals):
    step = els.build_plan(stats.image_shape, abar, size,
                          {**options, "chunk_size": options["subset_chunk_size"]}, batch)
    plans.append(Plan(retrieval=ret.replace(locality=None, expansion=None), els=step))
  return plans


def prepare(stats: Stats, abar: float, options: dict, batch: int) -> Plan:
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


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database sharded over ``mesh``; the subset is GoldDiff's sharded retrieval
  (the same as on one device: the pool is drawn per global row, `retrieval.pool_bits`)."""
  key = jax.random.key(0) if key is None else key
  batch = x_t.shape[0]
  queries = sharding.batch_spec(mesh)
  bits_spec = P(queries[0] if queries else None, sharding.DATA)
  n = stats.num_images
  ret = plan.retrieval
  bits = subset = None
  if ret.random_retrieval:
    subset = retrieval.random_subset(key, batch, n, ret.k if ret.ranked else ret.size, ret.size)
  elif ret.pool:
    bits = sharding.constrain(retrieval.pool_bits(key, batch, stats.database.shape[0], n),
                              mesh, bits_spec)

  def body(stats, plan, x_t, bits, subset):
    offset, _ = sharding.local_rows(stats.database.shape[0], n)
    ret = plan.retrieval
    if subset is None:
      # pylint: disable-next=protected-access
      proxy_db, proxy_sq, x_proxy, scale = golddiff._proxy_inputs(stats, ret, x_t)
      subset = retrieval.golden_subset_shard(
          stats.database, stats.sq_norms, proxy_db, proxy_sq, x_t, x_proxy, jnp.sqrt(ret.abar),
          bits, num_valid=n, m=ret.m, k=ret.size, survivors=ret.survivors, scale=float(scale),
          coarse_chunk=ret.coarse_chunk, fine_chunk=ret.fine_chunk, method=ret.select,
          recall_target=ret.recall_target, ranked=ret.ranked)
    state = aggregate_shard(stats.database, subset, x_t, plan.els, stats.image_shape, offset,
                            _count(ret))
    return els.finalize(state)

  return jax.shard_map(
      body, mesh=mesh,
      in_specs=(sharding.stats_specs(stats), plan_specs(plan), queries, bits_spec, queries),
      out_specs=queries, check_vma=False)(stats, plan, x_t, bits, subset)
