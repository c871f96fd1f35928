"""PCA-locality denoiser (Lukoianov et al. 2025; spec §4.3): a masked softmax per output coordinate.

For output coordinate m, candidate i gets the logit −Σ_n (x_t[n] − a_t x_i[n])² M_t[n, m] / (2σ_t² T):
a distance restricted to the inputs n that the locality mask M_t lets feed m. The mask is built once
per step of a sampling run (`prepare`), not once per batch.

The contraction over n is the hot spot, O(B·N·D·nnz/D). It has three exact implementations:

* ``dense``: ``delta @ M`` in float32 with precision HIGHEST;
* ``bf16x3``: the same product as three bfloat16 passes. M is 0/1, so it is exact in bfloat16, and
  delta is split into hi + mid + lo bfloat16 parts (24 significand bits, as float32), each multiplied
  with float32 accumulation. On CPUs with AMX (XLA flag ``--xla_cpu_use_onednn=true``) and on GPUs and
  TPUs this runs on the bf16 matrix units;
* ``sparse``: per-output index lists [D, P] and a gather-sum, O(B·N·D·P), computed in
  coordinate-major layout so that every gather moves whole contiguous rows; it wins when the mask
  is very sparse (late steps).

``auto`` picks ``dense`` unless the D×D float32 mask would exceed ``DENSE_MASK_MAX_BYTES`` (then
``sparse``): measured on CPU, the gather-sum never beat the GEMM (docs/benchmarks.md).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import chunking, masks, sharding, softmax
from golddiff_jax.stats import Stats

OPTIONS = {"mask_threshold": 0.05, "temperature": 1.0, "softmax": "exact",
           "wssm_chunk": 512, "mask_impl": "auto", "chunk_size": None}
MASK_IMPLS = ("auto", "dense", "bf16x3", "sparse")
SOFTMAX_MODES = ("exact", "wssm")
DENSE_MASK_MAX_BYTES = 2 * 2**30  # above this a [D, D] float32 mask is held as index lists
_CHUNK_BYTES = 48 * 2**20
_SLOT_GROUP = 32
HIGHEST = jax.lax.Precision.HIGHEST


@flax.struct.dataclass
class Plan:
  """One step's precomputed mask and static configuration."""
  abar: jax.Array
  mask: jax.Array | None          # [D, D] (float32, or bfloat16 for bf16x3)
  index: jax.Array | None         # [D, P] int32: column m's input coordinates (D = padding)
  impl: str = flax.struct.field(pytree_node=False)
  softmax: str = flax.struct.field(pytree_node=False)
  temperature: float = flax.struct.field(pytree_node=False)
  chunk_size: int = flax.struct.field(pytree_node=False)


def check_options(options: dict) -> None:
  theta = options["mask_threshold"]
  if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0.0 < theta < 1.0:
    raise ValueError(f"mask_threshold must be in (0, 1) (spec Q-10: θ = 0 would keep every "
                     f"entry), got {theta!r}")
  if options["mask_impl"] not in MASK_IMPLS:
    raise ValueError(f"mask_impl must be one of {MASK_IMPLS}, got {options['mask_impl']!r}")
  if options["softmax"] not in SOFTMAX_MODES:
    raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, got {options['softmax']!r}")
  if int(options["wssm_chunk"]) < 1:
    raise ValueError(f"wssm_chunk must be >= 1, got {options['wssm_chunk']}")


def choose_impl(requested: str, dim: int) -> str:
  """Resolves ``auto``: the dense GEMM unless the D×D mask would not fit in memory.

  Measured on CPU (docs/benchmarks.md): the gather-sum is no faster than the dense GEMM even at
  0.6% density once it is fused into the softmax, so it is chosen only for memory.
  """
  if requested != "auto":
    return requested
  return "sparse" if 4 * dim * dim > DENSE_MASK_MAX_BYTES else "dense"


def build_plan(mask: jax.Array, abar: float, options: dict, batch: int) -> Plan:
  """Packs a dense 0/1 mask [D, D] into the form ``options['mask_impl']`` asks for."""
  dim = mask.shape[0]
  impl = choose_impl(options["mask_impl"], dim)
  dense = index = None
  if impl == "sparse":  # index lists are built on the host; the dense forms stay on device
    host_index, host_valid = masks.sparse_form(np.asarray(mask))
    index = jnp.asarray(np.where(host_valid, host_index, dim))  # padding → the zero row
  elif impl == "bf16x3":
    dense = jnp.asarray(mask, jnp.bfloat16)
  else:
    dense = jnp.asarray(mask, jnp.float32)
  if options["softmax"] == "wssm":
    chunk = int(options["wssm_chunk"])
  elif options["chunk_size"]:
    chunk = int(options["chunk_size"])
  else:
    # Bytes per database row held at once: delta, distances, logits and weights.
    per_row = 4 * batch * dim * 4
    chunk = int(np.clip(_CHUNK_BYTES // per_row, 1, 512))
  return Plan(abar=jnp.float32(abar), mask=dense, index=index, impl=impl,
              softmax=options["softmax"], temperature=float(options["temperature"]),
              chunk_size=chunk)


def prepare(stats: Stats, abar: float, options: dict, batch: int) -> Plan:
  mask = masks.locality_mask(stats.eigvals, stats.eigvecs, abar,
                             float(options["mask_threshold"]))
  return build_plan(mask, abar, options, batch)


def _split_bf16(x: jax.Array) -> jax.Array:
  """x ≈ hi + mid + lo with each part bfloat16; returns them stacked [3, ...]."""
  hi = x.astype(jnp.bfloat16)
  rest = x - hi.astype(jnp.float32)
  mid = rest.astype(jnp.bfloat16)
  lo = (rest - mid.astype(jnp.float32)).astype(jnp.bfloat16)
  return jnp.stack([hi, mid, lo])


def masked_distance(delta: jax.Array, plan: Plan) -> jax.Array:
  """dist[r, m] = Σ_n delta[r, n] M[n, m] for delta [R, D] (contraction over the row index of M)."""
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

  def body(dist_t, group_index):
    return dist_t + gather_sum(group_index), None

  dist_t, _ = jax.lax.scan(body, jnp.zeros_like(delta_t[:-1]), index)
  return dist_t.T


def apply_to_candidates(candidates: jax.Array, plan: Plan, x_t: jax.Array,
                        state: softmax.SoftmaxState | None = None,
                        row_valid: jax.Array | None = None) -> softmax.SoftmaxState:
  """Streams the candidates [N, D] (rows with ``row_valid`` False skipped) through the masked
  per-coordinate softmax."""
  a = jnp.sqrt(plan.abar)
  scale = -0.5 / ((1.0 - plan.abar) * plan.temperature)
  batch, dim = x_t.shape

  def logits_fn(chunk):
    diff = x_t[:, None, :] - a * chunk[None, :, :]
    dist = masked_distance((diff * diff).reshape(-1, dim), plan)
    return scale * dist.reshape(batch, chunk.shape[0], dim)

  return chunking.softmax_average(candidates, logits_fn, batch=batch, num_softmaxes=dim,
                                  chunk_size=plan.chunk_size, mode=plan.softmax, state=state,
                                  row_valid=row_valid)


def apply(stats: Stats, plan: Plan, x_t: jax.Array,
          key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D] over the whole database (deterministic: ``key`` is unused)."""
  del key
  return softmax.finalize(apply_to_candidates(stats.database, plan, x_t))


def check_mesh_options(options: dict) -> None:
  """With a mesh only the exact softmax is allowed: WSSM averages per chunk of the *global* row
  order, which a shard boundary would split."""
  if options["softmax"] != "exact":
    raise ValueError("softmax='wssm' depends on how the database is chunked and cannot be "
                     "sharded; use softmax='exact' with a mesh")


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database sharded over ``mesh`` (`golddiff_jax.sharding`)."""
  del key
  def local_state(database, plan, x_t, row_valid):
    return apply_to_candidates(database, plan, x_t, row_valid=row_valid)
  return sharding.softmax_over_shards(local_state, stats, plan, x_t, mesh)
