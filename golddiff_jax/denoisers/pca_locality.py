"""PCA-locality denoiser (Lukoianov et al. 2025; docs/method.md §5.3): a masked softmax per output
coordinate.

For output coordinate m, candidate i gets the logit −Σ_n (x_t[n] − a_t x_i[n])² M_t[n, m] / (2σ_t² T):
a distance restricted to the inputs n that the locality mask M_t lets feed m. The mask is built once
per step of a sampling run (`prepare`), not once per batch.

The contraction over n is the hot spot, O(B·N·D²) dense. It has four exact implementations:

* ``dense``: ``delta @ M`` in float32 with precision HIGHEST;
* ``tiled``: the outputs are grouped into one-channel tiles of ``mask_tile``×``mask_tile`` pixels
  (`masks.tiled_form`), and each group reads only the union U_g of its inputs. The distance is
  expanded, Σ_n M x² − 2a Σ_n M x y + a² Σ_n M y², so the gather of a chunk's database rows is
  shared by the whole batch and the work is a [G·B, |U_g|] × [|U_g|, c] GEMM per group: cost
  `masks.TiledForm.cost_ratio` of the dense one (0.02–0.54 on the benchmark's procedural images at
  t ≤ 600, where the mask is local). Used by the full scan only (GoldDiff's per-sample subsets
  cannot share the gather);
* ``bf16x3``: the dense product as three bfloat16 passes. M is 0/1, so it is exact in bfloat16, and
  delta is split into hi + mid + lo bfloat16 parts (24 significand bits, as float32), each multiplied
  with float32 accumulation. On CPUs with AMX (XLA flag ``--xla_cpu_use_onednn=true``) and on GPUs and
  TPUs this runs on the bf16 matrix units;
* ``sparse``: per-output index lists [D, P] and a gather-sum, O(B·N·D·P), computed in
  coordinate-major layout so that every gather moves whole contiguous rows.

``auto`` picks, per step: ``sparse`` if the D×D float32 mask would exceed ``DENSE_MASK_MAX_BYTES``;
else ``tiled`` when its cost ratio is at most ``TILED_MAX_RATIO`` (and its per-call weights fit in
``TILED_MAX_BYTES``); else ``dense``. The thresholds are measured (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import numbers

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import chunking, masks, sharding, softmax, validation
from golddiff_jax.denoisers import base
from golddiff_jax.stats import Stats

MASK_IMPLS = ("auto", "dense", "tiled", "bf16x3", "sparse")
SOFTMAX_MODES = ("exact", "wssm")
DENSE_MASK_MAX_BYTES = 2 * 2**30  # above this a [D, D] float32 mask is held as index lists
TILED_MAX_RATIO = 0.6  # auto: tiled when its multiply-adds are at most this fraction of dense
TILED_MAX_BYTES = 2**30  # auto: ... and its per-call weights [groups, U, G·B] fit in this
_CHUNK_BYTES = 48 * 2**20
_SLOT_GROUP = 32
HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class MaskOptions(base.Options):
  """The locality mask M_t (`golddiff_jax.masks`, docs/method.md §5.3): θ and the variant."""
  mask_threshold: float = base.option(
      0.05, "θ ∈ (0, 1): the mask keeps the entries with |M̃| ≥ θ·max|M̃|.")
  eig_floor: float = base.option(
      masks.PUBLISHED["eig_floor"], "δ ≥ 0: covariance eigenvalues floored at δ before the "
      "shrink factors (0: the published rule).")
  diag_floor: float = base.option(
      masks.PUBLISHED["diag_floor"], "ρ ∈ [0, 1): rows normalised by max(|L̃[n, n]|, ρ·max diag) "
      "(0: the published rule).")
  threshold_scope: str = base.option(
      masks.PUBLISHED["threshold_scope"], "`global`: θ relative to the whole mask's largest "
      "entry (published); `output`: relative to each output column's.")

  def check(self) -> None:
    super().check()
    validation.check_mask_threshold(self.mask_threshold, name=base.name("mask_threshold"))
    masks.check_mask_options(self.mask_variant())

  def mask_variant(self) -> dict:
    """``mask_threshold`` and the variant options, as `masks.mask_for` takes them."""
    return {"mask_threshold": self.mask_threshold, "eig_floor": self.eig_floor,
            "diag_floor": self.diag_floor, "threshold_scope": self.threshold_scope}


@dataclasses.dataclass(frozen=True)
class Options(base.TemperatureOptions, MaskOptions):
  softmax: str = base.option(
      "exact", "`exact` (online softmax) or `wssm` (the published baseline's average of per-chunk "
      "softmaxes over `wssm_chunk` rows; single device only).")
  wssm_chunk: int = base.option(
      512, "WSSM chunk size in rows (512 as published for MNIST and CIFAR-10; 256 for the 64×64 "
      "sets).")
  mask_impl: str = base.option(
      "auto", "How the masked distance is contracted: `auto`, `dense`, `tiled`, `bf16x3` or "
      "`sparse` (all exact; `auto` picks per step, docs/benchmarks.md).")
  mask_tile: int = base.option(
      8, "Output tile side, in pixels, of the `tiled` form.")
  chunk_size: int | None = base.option(
      None, "Database rows per step of the streamed scan (memory only; None: from a 48 MiB "
      "budget). With `wssm` the chunks are `wssm_chunk`.")

  def check(self) -> None:
    super().check()
    validation.check_choice(self.mask_impl, MASK_IMPLS, name=base.name("mask_impl"))
    validation.check_choice(self.softmax, SOFTMAX_MODES, name=base.name("softmax"))
    chunk = self.wssm_chunk
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
      raise ValueError(f"{base.name('wssm_chunk')} must be >= 1, got {chunk!r}")
    tile = self.mask_tile
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
      raise ValueError(f"{base.name('mask_tile')} must be an integer >= 1, got {tile!r}")
    validation.check_optional_positive_int(self.chunk_size, name=base.name("chunk_size"))


@flax.struct.dataclass
class Plan:
  """One step's precomputed mask and static configuration."""
  abar: jax.Array
  mask: jax.Array | None      # [D, D] (float32, or bfloat16 for bf16x3); tiled: [groups, U, G]
  index: jax.Array | None     # sparse: [D, P] column m's inputs (D = padding); tiled: [groups, U]
  order: jax.Array | None     # tiled: [D'] natural coordinate of each tiled position
  position: jax.Array | None  # tiled: [D] tiled position of each natural coordinate
  impl: str = flax.struct.field(pytree_node=False)
  softmax: str = flax.struct.field(pytree_node=False)
  temperature: float = flax.struct.field(pytree_node=False)
  chunk_size: int = flax.struct.field(pytree_node=False)


def choose_impl(requested: str, dim: int, tiled: masks.TiledForm | None = None,
                batch: int = 1) -> str:
  """Resolves ``auto`` (module docstring); ``tiled`` is the step's tiled form, if it has one."""
  if requested != "auto":
    return requested
  if 4 * dim * dim > DENSE_MASK_MAX_BYTES:
    return "sparse"
  if (tiled is not None and tiled.cost_ratio <= TILED_MAX_RATIO
      and _tiled_weight_bytes(tiled, batch) <= TILED_MAX_BYTES):
    return "tiled"
  return "dense"


def _tiled_weight_bytes(tiled: masks.TiledForm, batch: int) -> int:
  return 4 * batch * tiled.sub.size


def build_plan(mask: jax.Array, abar: float, batch: int, *, mask_impl: str,
               temperature: float, chunk_size: int | None = None, softmax: str = "exact",
               wssm_chunk: int | None = None, mask_tile: int = Options.mask_tile,
               image_shape: tuple[int, int, int] | None = None) -> Plan:
  """Packs a dense 0/1 mask [D, D] into the form ``mask_impl`` asks for (options as in
  `Options`; ``chunk_size`` None: from a memory budget; ``wssm_chunk`` is used by ``wssm``).

  ``image_shape`` (H, W, C) enables the ``tiled`` form (the full-scan denoiser passes it).
  """
  dim = mask.shape[0]
  requested = mask_impl
  tiled = None
  if requested == "tiled" and image_shape is None:
    raise ValueError("mask_impl='tiled' is for the full-scan pca_locality denoiser (it needs the "
                     "image shape); use 'dense' or 'auto' here")
  if image_shape is not None and requested in ("tiled", "auto") and 4 * dim * dim <= (
      DENSE_MASK_MAX_BYTES):
    tiled = masks.tiled_form(np.asarray(mask), image_shape, int(mask_tile))
  impl = choose_impl(requested, dim, tiled, batch)
  dense = index = order = position = None
  if impl == "sparse":  # index lists are built on the host; the dense forms stay on device
    host_index, host_valid = masks.sparse_form(np.asarray(mask))
    index = jnp.asarray(np.where(host_valid, host_index, dim))  # padding → the zero row
  elif impl == "tiled":
    dense, index = jnp.asarray(tiled.sub), jnp.asarray(tiled.index)
    order, position = jnp.asarray(tiled.order), jnp.asarray(tiled.position)
  elif impl == "bf16x3":
    dense = jnp.asarray(mask, jnp.bfloat16)
  else:
    dense = jnp.asarray(mask, jnp.float32)
  if softmax == "wssm":
    chunk = int(wssm_chunk)
  elif chunk_size:
    chunk = int(chunk_size)
  elif impl == "tiled":
    # Bytes per database row held at once: logits and weights. Bigger chunks feed the per-group
    # GEMMs better (256 rows at B = 16, D = 3072 measured best).
    per_row = 4 * batch * tiled.sub.shape[0] * tiled.sub.shape[2] * 2
    chunk = int(np.clip(2 * _CHUNK_BYTES // per_row, 1, 512))
  else:
    # Bytes per database row held at once: delta, distances, logits and weights.
    per_row = 4 * batch * dim * 4
    chunk = int(np.clip(_CHUNK_BYTES // per_row, 1, 512))
  return Plan(abar=jnp.float32(abar), mask=dense, index=index, order=order, position=position,
              impl=impl, softmax=softmax, temperature=float(temperature), chunk_size=chunk)


def prepare(stats: Stats, abar: float, options: Options, batch: int) -> Plan:
  mask = masks.mask_for(stats, abar, options.mask_variant())
  return build_plan(mask, abar, batch, mask_impl=options.mask_impl,
                    temperature=options.temperature, chunk_size=options.chunk_size,
                    softmax=options.softmax, wssm_chunk=options.wssm_chunk,
                    mask_tile=options.mask_tile, image_shape=stats.image_shape)


def _split_bf16(x: jax.Array) -> jax.Array:
  """x ≈ hi + mid + lo with each part bfloat16; returns them stacked [3, ...]."""
  hi = x.astype(jnp.bfloat16)
  rest = x - hi.astype(jnp.float32)
  mid = rest.astype(jnp.bfloat16)
  lo = (rest - mid.astype(jnp.float32)).astype(jnp.bfloat16)
  return jnp.stack([hi, mid, lo])


def masked_distance(delta: jax.Array, plan: Plan) -> jax.Array:
  """dist[r, m] = Σ_n delta[r, n] M[n, m] for delta [R, D] (contraction over the row index of M)."""
  if plan.impl == "tiled":
    raise ValueError("the tiled form has no delta contraction; use `apply_to_candidates`")
  if plan.impl == "dense":
    return jnp.matmul(delta, plan.mask, precision=HIGHEST)
  if plan.impl == "bf16x3":
    parts = _split_bf16(delta)
    return jnp.sum(jnp.matmul(parts, plan.mask, preferred_element_type=jnp.float32), axis=0)
  # Sparse: coordinate-major layout, so each list slot gathers whole contiguous rows of R values;
  # padding slots point at an appended zero row. Slots are unrolled in groups of
  # _SLOT_GROUP (a rolled loop per slot is ~4x slower) and the groups run in a scan, so compile
  # time stays bounded for long lists.
  delta_t = jnp.concatenate([delta.T, jnp.zeros((1, delta.shape[0]), delta.dtype)])

  def gather_sum(index):  # index [D, G] → Σ_g delta_t[index[:, g]]
    dist_t = jnp.take(delta_t, index[:, 0], axis=0)
    for g in range(1, index.shape[1]):
      dist_t = dist_t + jnp.take(delta_t, index[:, g], axis=0)
    return dist_t

  slots = plan.index.shape[1]
  group = min(slots, _SLOT_GROUP)
  groups = -(-slots // group)
  index = jnp.pad(plan.index, ((0, 0), (0, groups * group - slots)),
                  constant_values=delta.shape[1])
  index = index.reshape(index.shape[0], groups, group).transpose(1, 0, 2)
  # Lists are filled from slot 0 and padded at the end, so only the groups up to the longest
  # list hold inputs: the loop stops there (lists padded to a run-wide width cost nothing extra).
  active = jnp.sum(jnp.any(index[:, :, 0] < delta.shape[1], axis=1))

  def body(g, dist_t):
    return dist_t + gather_sum(index[g])

  return jax.lax.fori_loop(0, active, body, jnp.zeros_like(delta_t[:-1])).T


def apply_to_candidates(candidates: jax.Array, plan: Plan, x_t: jax.Array,
                        state: softmax.SoftmaxState | None = None,
                        row_valid: jax.Array | None = None) -> softmax.SoftmaxState:
  """Streams the candidates [N, D] (rows with ``row_valid`` False skipped) through the masked
  per-coordinate softmax."""
  if plan.impl == "tiled":
    return _apply_tiled(candidates, plan, x_t, state, row_valid)
  batch, dim = x_t.shape
  return chunking.softmax_average(candidates, lambda chunk: masked_logits(x_t, chunk[None], plan),
                                  batch=batch, num_softmaxes=dim, chunk_size=plan.chunk_size,
                                  mode=plan.softmax, state=state, row_valid=row_valid)


def masked_logits(x_t: jax.Array, rows: jax.Array, plan: Plan) -> jax.Array:
  """logit[b, i, m] = −Σ_n (x_t[b, n] − a x_i[n])² M[n, m] / (2σ² T) → [B, c, D].

  ``rows`` are the candidates x_i: [1, c, D] shared by the batch, or [B, c, D] per sample.
  """
  batch, dim = x_t.shape
  diff = x_t[:, None, :] - jnp.sqrt(plan.abar) * rows
  dist = masked_distance((diff * diff).reshape(-1, dim), plan)
  return _logit_scale(plan) * dist.reshape(batch, -1, dim)


def _logit_scale(plan: Plan) -> jax.Array:
  return -0.5 / ((1.0 - plan.abar) * plan.temperature)


def _with_zero_column(x: jax.Array) -> jax.Array:
  return jnp.concatenate([x, jnp.zeros((x.shape[0], 1), x.dtype)], axis=1)


def _apply_tiled(candidates: jax.Array, plan: Plan, x_t: jax.Array,
                 state: softmax.SoftmaxState | None,
                 row_valid: jax.Array | None) -> softmax.SoftmaxState:
  """`apply_to_candidates` for the ``tiled`` form.

  dist[b, i, m] = Σ_n M[n, m] x_b[n]² − 2a Σ_n M[n, m] x_b[n] y_i[n] + a² Σ_n M[n, m] y_i[n]²,
  with n restricted to the union U_g of m's group; the x-only factors are formed once per call.
  Logits come out of the GEMM as [groups, G, B, c] (candidates minor) and stay in that layout, so
  the weighted sum over candidates is a batched matrix-vector product; the softmax state is
  [groups, G, B]. Candidate values are permuted to the tiled layout once per call.
  """
  a = jnp.sqrt(plan.abar)
  scale = _logit_scale(plan)
  batch = x_t.shape[0]
  groups, width, size = plan.mask.shape
  x_tiled = jnp.take(_with_zero_column(x_t), plan.order, axis=1)        # [B, D']
  x_groups = jnp.take(_with_zero_column(x_tiled).T, plan.index, axis=0)  # [g, U, B]
  cross = (-2.0 * a * scale) * (plan.mask[:, :, :, None] * x_groups[:, :, None, :])
  cross = cross.reshape(groups, width, size * batch)                     # [g, U, G·B]
  square = (a * a * scale) * plan.mask                                    # [g, U, G]
  const = scale * jnp.einsum("gub,guj->gjb", x_groups * x_groups, plan.mask,
                             precision=HIGHEST)                           # [g, G, B]
  contract = (((1,), (1,)), ((0,), (0,)))  # over U, batched over groups

  def logits_fn(chunk):  # chunk [c, D'] in the tiled layout → logits [g, G, B, c]
    rows = jnp.take(_with_zero_column(chunk).T, plan.index, axis=0)     # [g, U, c]
    mixed = jax.lax.dot_general(cross, rows, contract, precision=HIGHEST)       # [g, G·B, c]
    own = jax.lax.dot_general(square, rows * rows, contract, precision=HIGHEST)  # [g, G, c]
    return (mixed.reshape(groups, size, batch, -1) + own[:, :, None, :]
            + const[:, :, :, None])

  def weighted(p, chunk):  # Σ_i p[g, j, b, i] · y_i[(g, j)] → [g, G, B]
    values = chunk.T.reshape(groups, size, -1)                           # [g, G, c]
    return jax.lax.dot_general(p, values, (((3,), (2,)), ((0, 1), (0, 1))), precision=HIGHEST)

  def to_tiled(v):  # [B, D'] → [g, G, B]
    return v.reshape(batch, groups, size).transpose(1, 2, 0)

  if state is None:
    state = softmax.init(batch, groups * size, groups * size, x_t.dtype)
  else:
    fill = softmax.init(batch, 1, 1, x_t.dtype)  # the padding outputs' initial values
    state = softmax.SoftmaxState(*(jnp.take(jnp.concatenate([v, f], axis=1), plan.order, axis=1)
                                   for v, f in zip(state, fill)))
  state = softmax.SoftmaxState(*(to_tiled(v) for v in state))
  values = jnp.take(_with_zero_column(candidates), plan.order, axis=1)   # [N, D']
  state = chunking.softmax_average(values, logits_fn, batch=batch, num_softmaxes=0,
                                   chunk_size=plan.chunk_size, mode=plan.softmax, state=state,
                                   row_valid=row_valid, weighted=weighted, axis=3)
  return softmax.SoftmaxState(*(
      jnp.take(v.transpose(2, 0, 1).reshape(batch, -1), plan.position, axis=1) for v in state))


def apply(stats: Stats, plan: Plan, x_t: jax.Array,
          key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D] over the whole database (deterministic: ``key`` is unused)."""
  del key
  return softmax.finalize(apply_to_candidates(stats.database, plan, x_t))


def check_mesh_options(options: Options) -> None:
  """With a mesh only the exact softmax is allowed: WSSM averages per chunk of the *global* row
  order, which a shard boundary would split."""
  if options.softmax != "exact":
    raise ValueError("softmax='wssm' depends on how the database is chunked and cannot be "
                     "sharded; use softmax='exact' with a mesh")


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database sharded over ``mesh`` (`golddiff_jax.sharding`)."""
  del key
  def local_state(database, plan, x_t, row_valid):
    return apply_to_candidates(database, plan, x_t, row_valid=row_valid)
  return sharding.softmax_over_shards(local_state, stats, plan, x_t, mesh)


base.register("pca_locality", options=Options, prepare=prepare, apply=apply,
              apply_sharded=apply_sharded, check_mesh_options=check_mesh_options)
