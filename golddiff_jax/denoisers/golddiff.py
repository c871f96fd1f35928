"""GoldDiff (Shang et al. 2026; docs/method.md §5.6, §6): PCA-locality over a time-aware golden
subset.

Each step t retrieves, per sample, a golden subset S_t(b) of k_t training images (random pool of
m_t → k_max proxy survivors → k_t nearest in unmasked L2; `golddiff_jax.retrieval`) and returns the
masked per-coordinate exact softmax of PCA-locality (docs/method.md §5.3) restricted to it:

    x̂_0[b, m] = Σ_{i∈S_t(b)} softmax_i(−Σ_n (x_t[b, n] − a_t x_i[n])² M_t[n, m] / (2σ_t² T)) x_i[m]

`prepare_run` (host, once per run) resolves the budgets (`golddiff_jax.budgets`), builds the proxy
database P(X) and its norms once (shared by every step's plan) and the step's locality mask in the
form ``mask_impl`` asks for (`pca_locality.build_plan`). `apply` is pure and jit-able.

Few compiles: m_t and k_t are traced values, not shapes. A run's golden subsets all have the static
size K = max_t k_t (one bucket): the fine stage ranks its survivors nearest first, entries
k_t … K − 1 are masked, and the aggregation stops after the chunks that hold the first k_t (a
loop with a traced trip count), so padding costs no masked-product work. Every step that uses
the same mask form thus shares one compiled function (index lists are padded to one width).

Options: `Options` (the reference is generated from it: docs/options.md). ``k_min``/``k_max``
above N or k_min > k_max raise ValueError rather than being clamped as in the published code;
the high-noise expansion (`golddiff_jax.high_noise`, docs/method.md §6.8) replaces the random
pool at steps with ᾱ_t ≤ ``high_noise_abar`` whose pool is smaller than N. Chunk sizes are memory
knobs only. ``mask_impl="auto"`` picks per step the dense product or, where the mask is local
enough (`SPARSE_MAX_RATIO`), per-output index lists, so each output reads only its own inputs.

The "repeat" proxy (ρ > 1) is computed as ρ·‖x_t − a_t x_i‖² on the database itself, which is
the tiled proxy's distance without materialising a ρ·D copy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from golddiff_jax import (budgets as budgets_lib, chunking, high_noise as high_noise_lib, masks,
                          retrieval,
                          select as select_lib, sharding, softmax, validation)
from golddiff_jax.denoisers import base, pca_locality
from golddiff_jax.stats import Stats

PROXY_MODES = ("repeat", "bilinear")
HIGH_NOISE = ("pool", "expansion")
# auto: the per-sample masked product uses the index-list (gather-sum) form when the longest
# column of the mask has at most this fraction of D inputs. Measured on the benchmark's data
# (N = 5000, 32×32×3, B = 16, θ = 0.03): aggregation time sparse/dense = 0.36 at P/D = 0.038,
# 0.67 at 0.074 and 1.2 at 0.13 (docs/benchmarks.md).
SPARSE_MAX_RATIO = 0.08
_SCAN_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class RetrievalOptions(base.Options):
  """The golden subset's budgets, proxy and selection (docs/method.md §6), shared by every method
  that retrieves one."""
  k_min: int | None = base.option(
      None, "Smallest golden-subset size k (at t = 0); None: round(N/20). Above N, or above "
      "`k_max`, raises ValueError (the published code clamps).", section="golden")
  k_max: int | None = base.option(
      None, "Largest golden-subset size k (at high noise) and the number of proxy survivors; "
      "None: round(N/10).", section="golden")
  low_res_dim: int = base.option(
      16, "Proxy resolution r_p: each side is average-pooled to r_p (a non-divisor of the image "
      "side falls back to the largest divisor below it; 0: the published automatic rule).",
      section="golden")
  select: str = base.option(
      "exact", "Top-k strategy: `exact` (`lax.top_k`), `approx` (`lax.approx_min_k`), `bucket` "
      "(bucketed reduce, sort-free) or `threshold` (bisection on the k-th value).",
      section="golden")
  recall_target: float = base.option(
      0.95, "For `select='bucket'`: expected recall r, bins M ≈ (k − 1)/(−ln r).",
      section="golden")
  dynamic_m: bool = base.option(
      True, "False: a fixed random-pool size m (`static_m`) at every step (docs/method.md §6.3).",
      section="golden")
  dynamic_k: bool = base.option(
      True, "False: a fixed golden-subset size k (`static_k`) at every step.", section="golden")
  static_m: int | None = base.option(
      None, "Pool size with `dynamic_m=False` (None: ⌊(k_max + N)/2⌋); below k_max raises.",
      section="golden")
  static_k: int | None = base.option(
      None, "Subset size with `dynamic_k=False` (None: ⌊(k_min + k_max)/2⌋).", section="golden")
  random_retrieval: bool = base.option(
      False, "Ablation: the golden subset is k_t uniform random images.", section="golden")
  proxy_repeat_factor: int = base.option(
      1, "Ablation ρ ≥ 1: a proxy larger than the image (ρ·D coordinates).", section="golden")
  proxy_upsample_mode: str = base.option(
      "repeat", "How the ρ > 1 proxy is made: `repeat` or `bilinear` (ρ a perfect square).",
      section="golden")
  chunk_size: int | None = base.option(
      None, "Rows per step of the coarse proxy scan over N (memory only; None: automatic).")
  subset_chunk_size: int | None = base.option(
      None, "Subset rows per step of the fine selection and of the aggregation (memory only; "
      "None: automatic).", section="golden")

  def check(self) -> None:
    super().check()
    for field in ("k_min", "k_max", "static_m", "static_k", "subset_chunk_size", "chunk_size"):
      validation.check_optional_positive_int(getattr(self, field), name=base.name(field))
    if self.k_min is not None and self.k_max is not None and self.k_min > self.k_max:
      raise ValueError(f"{base.name('k_min')}={self.k_min} must be <= "
                       f"{base.name('k_max')}={self.k_max}")
    low = self.low_res_dim
    if isinstance(low, bool) or not isinstance(low, numbers.Integral) or low < 0:
      raise ValueError(f"{base.name('low_res_dim')} must be an int >= 0 (0 = automatic), "
                       f"got {low!r}")
    select_lib.check_method(self.select)
    select_lib.check_recall(self.recall_target)
    for field in ("dynamic_m", "dynamic_k", "random_retrieval"):
      validation.check_bool(getattr(self, field), name=base.name(field))
    rho = self.proxy_repeat_factor
    if isinstance(rho, bool) or not isinstance(rho, numbers.Integral) or rho < 1:
      raise ValueError(f"{base.name('proxy_repeat_factor')} must be an int >= 1, got {rho!r}")
    validation.check_choice(self.proxy_upsample_mode, PROXY_MODES,
                            name=base.name("proxy_upsample_mode"))
    if rho > 1 and self.proxy_upsample_mode == "bilinear" and math.isqrt(rho) ** 2 != rho:
      raise ValueError(f"{base.name('proxy_repeat_factor')}={rho} must be a perfect square for "
                       f"bilinear upsampling")


@dataclasses.dataclass(frozen=True)
class Options(RetrievalOptions, base.TemperatureOptions, pca_locality.MaskOptions):
  mask_threshold: float = base.redefault(pca_locality.MaskOptions, "mask_threshold", 0.03)
  softmax: str = base.option("exact", "`exact` only (the per-sample subsets are not chunked).")
  mask_impl: str = base.option(
      "auto", "The masked product: `auto`, `dense`, `bf16x3` or `sparse` (`auto`: index lists "
      "where the mask is local enough, `SPARSE_MAX_RATIO`, else dense).")
  high_noise: str = base.option(
      "expansion", "`pool`: the published random pool at every step; `expansion`: steps with "
      "ᾱ_t ≤ `high_noise_abar` whose pool is smaller than N use the closed-form first-order "
      "expansion over all N images (docs/method.md §6.8; not with `random_retrieval`).",
      section="golden")
  high_noise_abar: float = base.option(
      0.002, "ᾱ bound of the high-noise expansion, in [0, 1) (0.002: t ≥ 800 of the 1000-step "
      "schedule).", section="golden")

  def check(self) -> None:
    super().check()
    impls = tuple(i for i in pca_locality.MASK_IMPLS if i != "tiled")  # tiled: full scan only
    if self.mask_impl not in impls:
      raise ValueError(f"{base.name('mask_impl')} must be one of {impls}, got {self.mask_impl!r} "
                       f"(the tiled form needs a candidate set shared by the batch)")
    if self.softmax != "exact":
      raise ValueError(f"golddiff supports softmax='exact' only, got {self.softmax!r}")
    validation.check_choice(self.high_noise, HIGH_NOISE, name=base.name("high_noise"))
    bound = self.high_noise_abar
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not 0.0 <= bound < 1.0:
      raise ValueError(f"{base.name('high_noise_abar')} must be in [0, 1), got {bound!r}")



@flax.struct.dataclass
class Plan:
  """One step: noise level, locality mask, shared proxy database and static budgets.

  ``proxy`` is ("pool", r_h, r_w) for f×f average pooling to an r_h×r_w grid, ("identity", s)
  when the proxy is the database itself with distance scale s (f = 1, or the ρ-"repeat"
  ablation with s = ρ), or ("bilinear", s) for the ×s bilinear upsampling ablation.
  ``m``, ``k`` (int32 scalars) are the step's budgets, traced so that steps share a compile;
  ``size`` ≥ k is the static golden-subset width of the run, ``pool`` whether a random pool is
  drawn (some step of the run has m_t < N) and ``ranked`` whether subsets are padded (size > k_t
  at some step), so that the fine stage must rank them nearest first.
  """
  abar: jax.Array
  locality: pca_locality.Plan | None  # None at a step that uses the expansion
  proxy_db: jax.Array | None      # [N, d_p], shared by every step; None for "identity"
  proxy_sq: jax.Array | None      # [N]
  m: jax.Array
  k: jax.Array
  size: int = flax.struct.field(pytree_node=False)
  pool: bool = flax.struct.field(pytree_node=False)
  ranked: bool = flax.struct.field(pytree_node=False)
  survivors: int = flax.struct.field(pytree_node=False)
  proxy: tuple = flax.struct.field(pytree_node=False)
  select: str = flax.struct.field(pytree_node=False)
  recall_target: float = flax.struct.field(pytree_node=False)
  random_retrieval: bool = flax.struct.field(pytree_node=False)
  coarse_chunk: int = flax.struct.field(pytree_node=False)
  fine_chunk: int = flax.struct.field(pytree_node=False)
  expansion: high_noise_lib.Expansion | None = None  # the closed-form high-noise step


def proxy_kind(image_shape, options: RetrievalOptions) -> tuple:
  """The static proxy description: pooling grid, identity with scale ρ, or bilinear ×s."""
  rho = int(options.proxy_repeat_factor)
  if rho > 1:
    if options.proxy_upsample_mode == "bilinear":
      return ("bilinear", math.isqrt(rho))
    return ("identity", rho)
  rh, rw = budgets_lib.proxy_grid(image_shape, options.low_res_dim)
  h, w, _ = image_shape
  if (rh, rw) == (h, w):
    return ("identity", 1)
  return ("pool", rh, rw)


def proxy_transform(x: jax.Array, image_shape, kind: tuple) -> jax.Array | None:
  """P(x) for flattened images x [R, D] → [R, d_p]; None when the proxy is x itself."""
  h, w, c = image_shape
  if kind[0] == "identity":
    return None
  img = x.reshape(x.shape[0], h, w, c)
  if kind[0] == "pool":
    rh, rw = kind[1], kind[2]
    pooled = img.reshape(x.shape[0], rh, h // rh, rw, w // rw, c).mean(axis=(2, 4))
    return pooled.reshape(x.shape[0], rh * rw * c)
  s = kind[1]
  up = jax.image.resize(img, (x.shape[0], h * s, w * s, c), method="bilinear")
  return up.reshape(x.shape[0], -1)


@jax.jit
def _sq_norms(x):
  return jnp.einsum("nd,nd->n", x, x, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("size", "image_shape", "kind"))
def _proxy_rows(database, start, *, size, image_shape, kind):
  rows = jax.lax.dynamic_slice_in_dim(database, start, size, axis=0)
  return proxy_transform(rows, image_shape, kind)


def build_proxy(stats: Stats, kind: tuple) -> tuple[jax.Array | None, jax.Array | None]:
  """(P(X) [N, d_p], ‖P(x_i)‖² [N]) computed once on device in row blocks of equal size.

  A sharded database gives a proxy database sharded the same way (computed shard by shard).
  """
  if kind[0] == "identity":
    return None, None
  n = stats.database.shape[0]
  growth = kind[1] ** 2 if kind[0] == "bilinear" else 1
  size = min(n, max(1, _SCAN_BYTES // (4 * stats.dim * growth)))
  if stats.mesh is not None:
    def local(rows):
      one = lambda row: proxy_transform(row[None], stats.image_shape, kind)[0]
      proxy = jax.lax.map(one, rows, batch_size=min(size, rows.shape[0]))
      return proxy, _sq_norms(proxy)
    data = P(sharding.DATA)
    return jax.jit(jax.shard_map(local, mesh=stats.mesh, in_specs=data,
                                 out_specs=(data, data)))(stats.database)
  starts = [min(s, n - size) for s in range(0, n, size)]  # equal blocks: one compile
  parts = [_proxy_rows(stats.database, s, size=size, image_shape=stats.image_shape, kind=kind)
           for s in starts]
  if len(parts) > 1:
    parts[-1] = parts[-1][len(parts) * size - n:]  # drop rows the previous block covered
  proxy = jnp.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
  return proxy, _sq_norms(proxy)


def _coarse_chunk(options, batch, n, proxy_dim, survivors):
  if options.chunk_size:
    return int(options.chunk_size)
  return int(min(n, max(survivors, _SCAN_BYTES // (4 * (batch + proxy_dim)))))


def expansion_steps(options: RetrievalOptions, abars, sizes, n: int) -> list[bool]:
  """Which steps use the high-noise expansion instead of retrieval (``sizes``: the (m_t, k_t) of
  each step, ``n``: the database size). The expansion replaces a random pool; a step whose pool
  is the whole database is exact, and the random-retrieval ablation keeps its random subsets."""
  return [isinstance(options, Options) and options.high_noise == "expansion" and m < n
          and not options.random_retrieval and float(abar) <= float(options.high_noise_abar)
          for abar, (m, _) in zip(abars, sizes)]


def prepare_run(stats: Stats, abars, options: RetrievalOptions, batch: int) -> list[Plan]:
  """Host-side plans for every step of a run; the proxy database is built once and shared.

  ``options`` are GoldDiff's `Options`, or the `RetrievalOptions` of a method that only
  retrieves (its plans then have no locality mask and every step retrieves).
  """
  n = stats.num_images
  bounds = budgets_lib.resolve_budgets(n, options.k_min, options.k_max)
  sizes = budgets_lib.schedule(bounds, abars, dynamic_m=options.dynamic_m,
                               dynamic_k=options.dynamic_k, static_m=options.static_m,
                               static_k=options.static_k)
  kind = proxy_kind(stats.image_shape, options)
  random_only = bool(options.random_retrieval)
  proxy_db, proxy_sq = (None, None) if random_only else build_proxy(stats, kind)
  proxy_dim = stats.dim if proxy_db is None else proxy_db.shape[1]
  coarse = _coarse_chunk(options, batch, n, proxy_dim, bounds.k_max)
  fine = options.subset_chunk_size or max(1, _SCAN_BYTES // (4 * batch * stats.dim))
  local = isinstance(options, Options)  # a locality mask per step
  expand = expansion_steps(options, abars, sizes, n)
  retrieved = [mk for mk, e in zip(sizes, expand) if not e] or sizes
  size = max(k for _, k in retrieved)
  pool = any(m < n for m, _ in retrieved)
  ranked = any(k < size for _, k in retrieved)
  if local:
    moments = high_noise_lib.database_moments(stats.database, n) if any(expand) else None
    step_masks = [masks.mask_for(stats, abar, options.mask_variant()) for abar in abars]
    localities = _locality_plans(step_masks, abars, expand, options, batch)
  else:
    step_masks = localities = [None] * len(abars)
  plans = []
  for abar, (m, k), mask, locality, e in zip(abars, sizes, step_masks, localities, expand):
    expansion = (high_noise_lib.prepare(moments, mask, abar, float(options.temperature))
                 if e else None)
    plans.append(Plan(abar=jnp.float32(abar), locality=locality, proxy_db=proxy_db,
                      proxy_sq=proxy_sq, m=jnp.int32(m), k=jnp.int32(k), size=size, pool=pool,
                      ranked=ranked, survivors=bounds.k_max, proxy=kind,
                      select=options.select, recall_target=float(options.recall_target),
                      random_retrieval=random_only, coarse_chunk=coarse,
                      fine_chunk=int(fine), expansion=expansion))
  return plans


def _longest_column(mask: jax.Array) -> int:
  return int(jnp.max(jnp.sum(mask != 0, axis=0)))


def _locality_plans(step_masks, abars, expand, options: Options,
                    batch: int) -> list[pca_locality.Plan | None]:
  """Each retrieval step's masked-product plan (None at expansion steps).

  ``auto`` picks, per step, the index-list form when the mask's longest column has at most
  ``SPARSE_MAX_RATIO``·D inputs (each output then reads only its own inputs), else the dense
  product. The index lists of all such steps are padded to one width, so they share a compile
  (the gather-sum loop stops at each step's own longest list).
  """
  plans = []
  for mask, abar, e in zip(step_masks, abars, expand):
    if e:
      plans.append(None)
      continue
    impl = options.mask_impl
    if impl == "auto" and _longest_column(mask) <= SPARSE_MAX_RATIO * mask.shape[0]:
      impl = "sparse"
    plans.append(pca_locality.build_plan(mask, abar, batch, mask_impl=impl,
                                         temperature=options.temperature,
                                         chunk_size=options.subset_chunk_size))
  lists = [p for p in plans if p is not None and p.impl == "sparse"]
  width = max((p.index.shape[1] for p in lists), default=0)
  for j, plan in enumerate(plans):
    if plan is not None and plan.impl == "sparse" and plan.index.shape[1] < width:
      index = jnp.pad(plan.index, ((0, 0), (0, width - plan.index.shape[1])),
                      constant_values=plan.index.shape[0])
      plans[j] = plan.replace(index=index)
  return plans


def prepare(stats: Stats, abar: float, options: RetrievalOptions, batch: int) -> Plan:
  return prepare_run(stats, [abar], options, batch)[0]


def _proxy_inputs(stats: Stats, plan: Plan, x_t: jax.Array) -> tuple:
  """(proxy rows, their squared norms, P(x_t), distance scale) for the coarse screen."""
  if plan.proxy[0] == "identity":
    return stats.database, stats.sq_norms, x_t, plan.proxy[1]
  return plan.proxy_db, plan.proxy_sq, proxy_transform(x_t, stats.image_shape, plan.proxy), 1.0


def _pool_size(plan: Plan, n: int):
  """m_t as `retrieval` takes it: traced when a pool is drawn, the static N when none is."""
  return plan.m if plan.pool else n


def golden_subset(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array) -> jax.Array:
  """S_t [B, size] int32: the golden subset of every sample (docs/method.md §6.2 steps 5–8); only
  the first ``plan.k`` entries of a row count when ``plan.size`` > k_t
  (they are the k_t nearest)."""
  batch = x_t.shape[0]
  if plan.random_retrieval:
    k = plan.k if plan.ranked else plan.size
    return retrieval.random_subset(key, batch, stats.num_images, k, plan.size)
  a = jnp.sqrt(plan.abar)
  proxy_db, proxy_sq, x_proxy, scale = _proxy_inputs(stats, plan, x_t)
  return retrieval.golden_subset(
      stats.database, stats.sq_norms, proxy_db, proxy_sq, x_t, x_proxy, a, key,
      m=_pool_size(plan, stats.num_images), k=plan.size, survivors=plan.survivors,
      scale=float(scale), coarse_chunk=plan.coarse_chunk, fine_chunk=plan.fine_chunk,
      method=plan.select, recall_target=plan.recall_target, ranked=plan.ranked)


def _fold_rows(state: softmax.SoftmaxState, rows: jax.Array, valid: jax.Array, x_t: jax.Array,
               locality: pca_locality.Plan) -> softmax.SoftmaxState:
  """Folds per-sample candidate rows [B, c, D] (``valid`` [B, c]) into the state [B, D]."""
  logits = jnp.where(valid[:, :, None], pca_locality.masked_logits(x_t, rows, locality), -jnp.inf)
  # Each sample has its own values: Σ_i p[b, i, m] · rows[b, i, m] is elementwise, no matmul.
  return softmax.update_exact(state, logits, rows, weighted=_per_sample_weighted)


def _per_sample_weighted(p: jax.Array, rows: jax.Array) -> jax.Array:
  return jnp.sum(p * rows, axis=1)


def aggregate(database: jax.Array, subset: jax.Array, x_t: jax.Array,
              locality: pca_locality.Plan, count: jax.Array | None = None
              ) -> softmax.SoftmaxState:
  """Masked per-coordinate exact softmax over each sample's own candidates ``subset`` [B, K].

  Only the first ``count`` entries of each row count (traced int32; None: all K); the chunks
  past them are not computed. Streams the subset in chunks of ``locality.chunk_size``; returns
  the state with arrays [B, D] (`softmax.finalize` gives x̂_0). The order of the counted entries
  does not matter.
  """
  init = softmax.init(subset.shape[0], database.shape[1], database.shape[1])
  return chunking.fold_subset(
      database, subset, locality.chunk_size, count,
      lambda state, rows, valid: _fold_rows(state, rows, valid, x_t, locality), init)


def aggregate_shard(database: jax.Array, subset: jax.Array, x_t: jax.Array,
                    locality: pca_locality.Plan, offset: jax.Array,
                    count: jax.Array | None = None) -> softmax.SoftmaxState:
  """`aggregate` inside ``shard_map`` with the rows sharded over ``data``: each shard folds its
  reduce-scattered share of the subset rows (`sharding.fold_subset_rows`), and the per-shard
  states merge with ``pmax``/``psum``."""
  batch, dim = x_t.shape
  state = sharding.fold_subset_rows(
      database, subset, offset, locality.chunk_size, count,
      lambda state, rows, mine: _fold_rows(state, rows, mine, x_t, locality),
      softmax.init(batch, dim, dim))
  return sharding.combine_softmax(state)


def apply(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D]. ``key`` drives the pre-sampling (None: ``jax.random.key(0)``)."""
  if plan.expansion is not None:
    return high_noise_lib.apply(plan.expansion, x_t)
  key = jax.random.key(0) if key is None else key
  subset = golden_subset(stats, plan, x_t, key)
  count = plan.k if plan.ranked else None
  return softmax.finalize(aggregate(stats.database, subset, x_t, plan.locality, count))


def plan_specs(plan: Plan):
  """PartitionSpecs of a plan on a mesh: the proxy database is sharded like the database."""
  specs = sharding.replicated_specs(plan)
  if plan.proxy_db is None:
    return specs
  return specs.replace(proxy_db=P(sharding.DATA), proxy_sq=P(sharding.DATA))


def apply_retrieved_sharded(stats: Stats, plan, x_t: jax.Array, key: jax.Array | None, mesh, *,
                            retrieval_of: Callable, specs: Callable,
                            aggregate_shard_fn: Callable) -> jax.Array:
  """The sharded golden-subset step shared by GoldDiff and golden-subset ELS.

  ``retrieval_of(plan)`` is the step's retrieval `Plan` (GoldDiff's own plan, or the one inside
  another method's plan); ``specs(plan)`` its PartitionSpecs. The random pool is drawn per
  global row (`retrieval.pool_bits`), so the subset is the same on any device count; each shard
  retrieves from its rows and ``aggregate_shard_fn(stats, plan, subset, x_t, offset)`` (inside
  ``shard_map``) turns them into x̂_0.
  """
  key = jax.random.key(0) if key is None else key
  batch = x_t.shape[0]
  queries = sharding.batch_spec(mesh)
  bits_spec = P(queries[0] if queries else None, sharding.DATA)
  n = stats.num_images
  ret = retrieval_of(plan)
  bits = subset = None
  if ret.random_retrieval:
    subset = retrieval.random_subset(key, batch, n, ret.k if ret.ranked else ret.size, ret.size)
  elif ret.pool:
    bits = sharding.constrain(retrieval.pool_bits(key, batch, stats.database.shape[0], n),
                              mesh, bits_spec)

  def body(stats, plan, x_t, bits, subset):
    offset, _ = sharding.local_rows(stats.database.shape[0], n)
    ret = retrieval_of(plan)
    if subset is None:
      proxy_db, proxy_sq, x_proxy, scale = _proxy_inputs(stats, ret, x_t)
      subset = retrieval.golden_subset_shard(
          stats.database, stats.sq_norms, proxy_db, proxy_sq, x_t, x_proxy, jnp.sqrt(ret.abar),
          bits, num_valid=n, m=ret.m, k=ret.size, survivors=ret.survivors, scale=float(scale),
          coarse_chunk=ret.coarse_chunk, fine_chunk=ret.fine_chunk, method=ret.select,
          recall_target=ret.recall_target, ranked=ret.ranked)
    return aggregate_shard_fn(stats, plan, subset, x_t, offset)

  return jax.shard_map(
      body, mesh=mesh,
      in_specs=(sharding.stats_specs(stats), specs(plan), queries, bits_spec, queries),
      out_specs=queries, check_vma=False)(stats, plan, x_t, bits, subset)


def _aggregate_step(stats: Stats, plan: Plan, subset, x_t, offset) -> jax.Array:
  count = plan.k if plan.ranked else None
  return softmax.finalize(aggregate_shard(stats.database, subset, x_t, plan.locality, offset,
                                          count))


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database (and proxy database) sharded over ``mesh``; same result for the
  same key on any device count (`apply_retrieved_sharded`)."""
  if plan.expansion is not None:  # no database access: the moments are replicated
    return high_noise_lib.apply(plan.expansion, x_t)
  return apply_retrieved_sharded(stats, plan, x_t, key, mesh, retrieval_of=lambda p: p,
                                 specs=plan_specs, aggregate_shard_fn=_aggregate_step)


base.register("golddiff", options=Options, prepare_run=prepare_run, apply=apply,
              apply_sharded=apply_sharded, plan_specs=plan_specs)
