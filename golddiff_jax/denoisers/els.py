"""Equivariant local score (ELS) machine of Kamb & Ganguli (arXiv 2412.20292): a patch softmax.

For every output pixel (h, w) the noisy image's k×k window Π_hw(x_t) (all channels) is compared
with k×k windows p of the training images, and the prediction is the softmax-weighted mean of the
windows' centre pixels:

    x̂_0[h, w, :] = Σ_p softmax_p(−‖Π_hw(x_t) − a_t·p‖² / (2σ_t² T)) · centre(p)

with a_t = √ᾱ_t, σ_t² = 1 − ᾱ_t and T the temperature. Which windows p compete for pixel (h, w)
depends on ``padding`` (r = k // 2):

* ``circular``: Π_hw(x_t) wraps around the image edges; the candidates are every window lying
  fully inside every training image, (H − 2r)·(W − 2r) per image, for every pixel.
* ``borders`` (the authors' default): zero padding, with the edges and corners handled apart. A
  row h is a *border row* when it lies within r of the top or bottom edge (h < r or h ≥ H − r),
  else an *interior row*; the same for columns. The candidate rows of output row h are {h} for a
  border row and all interior rows for an interior row; the same for columns, and pixel (h, w)'s
  candidates are the zero-padded windows centred at (candidate row, candidate column) of every
  training image. So an interior pixel sees every fully-inside window (translation equivariance),
  an edge pixel sees the windows along the same edge at the same depth (their zero padding lines
  up with its own), and a corner pixel sees only the window at its own position. When k ≥ H
  every row is a border row: the machine becomes the local (non-equivariant) score at each pixel.

Computation (no database windows are materialised). With Q(h, w) = ‖Π_hw(x_t)‖² and
R(h', w') = ‖p_h'w'‖², ‖Π − a·p‖² = Q + a²R − 2a⟨Π, p⟩. R is a k×k box filter of the squared
training image; the cross term ⟨Π_hw, p_h'w'⟩ over all candidate positions is a VALID convolution
of the training image with the query windows as filters (`lax.conv_general_dilated`; the query
side's k²-fold copy is B·P·k²·C numbers, once per step). The pixels are split into parts whose
candidates share a structure, so that every logit computed is one that the softmax uses (up to the
border masks below):

* ``grid``: the interior pixels (``circular``: all pixels) against all fully-inside windows, one
  convolution of the whole image;
* ``rows``: the pixels of the border rows against the windows centred in the same row: one
  grouped convolution (one group per border row, on a k-row strip of the zero-padded image); the
  column rule becomes a static mask;
* ``cols``: the border columns of the interior rows, the same on the transposed image.

The database is streamed in chunks of whole images with the exact online softmax
(`golddiff_jax.softmax`); memory is O(chunk·B·P²) (a chunk's logits) whatever N is. With a mesh
the images are sharded over ``data`` and the per-shard softmax states merge as for the other
exact denoisers (`sharding.softmax_over_shards`).

Cost per step, in multiply-adds: B·N·C·k²·Σ_parts (queries × candidates), ≈ B·N·P·(H−2r)(W−2r)·C·k²
for small k (`multiply_adds`). Each logit also costs an exp and a few adds, which dominate on
CPU for small k (docs/els.md). The distance is in expanded form: at t = 0 (σ² = 1e−4) a float32
rounding of the distance moves a logit by ~1e−2, as for the expanded distances of GoldDiff's
screen.

Options: `Options` (reference: docs/options.md).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import chunking, sharding, softmax, validation
from golddiff_jax.denoisers import base
from golddiff_jax.stats import Stats

PADDINGS = ("borders", "circular")
HIGHEST = jax.lax.Precision.HIGHEST
_CHUNK_BYTES = 64 * 2**20


# ---- geometry (host, static) ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Part:
  """One group of output pixels whose candidate windows share a structure (static).

  kind ``grid``: queries ``rows`` × ``cols`` against every fully-inside window (candidates
  (H − 2r)·(W − 2r)). kind ``rows``: queries ``rows`` (border rows) × ``cols`` against the windows
  centred in the query's own row, at every column of the zero-padded image, restricted by
  ``mask`` [W, len(cols)] (candidate column, query column). ``transposed``: the part lives on the
  transposed image (its rows are the image's columns).
  """
  kind: str
  rows: tuple
  cols: tuple
  transposed: bool = False
  mask: tuple | None = None  # nested tuples of bools (hashable)

  def pixels(self, width: int) -> np.ndarray:
    """Flat pixel index h·W + w of each query, in the part's (row-major) query order."""
    r, c = np.meshgrid(np.asarray(self.rows), np.asarray(self.cols), indexing="ij")
    if self.transposed:
      r, c = c, r
    return (r * width + c).reshape(-1)


def _split(n: int, r: int) -> tuple[tuple, tuple]:
  """(border, interior) indices along an axis of length n for window radius r."""
  border = tuple(i for i in range(n) if i < r or i >= n - r)
  interior = tuple(i for i in range(n) if r <= i < n - r)
  return border, interior


def _row_part(border_rows, query_cols, width, r, transposed) -> Part:
  """A ``rows`` part with the column rule as a mask: a border query column sees only its own
  column, an interior one every interior column."""
  inside = np.asarray([r <= j < width - r for j in range(width)])
  mask = np.zeros((width, len(query_cols)), bool)
  for q, col in enumerate(query_cols):
    if inside[col]:
      mask[:, q] = inside
    else:
      mask[col, q] = True
  return Part("rows", tuple(border_rows), tuple(query_cols), transposed,
              tuple(map(tuple, mask.tolist())))


@functools.lru_cache(maxsize=None)
def parts(height: int, width: int, k: int, padding: str) -> tuple[Part, ...]:
  """The parts covering every pixel exactly once, for a k×k window and ``padding``."""
  r = k // 2
  if padding == "circular":
    return (Part("grid", tuple(range(height)), tuple(range(width))),)
  border_rows, inner_rows = _split(height, r)
  border_cols, inner_cols = _split(width, r)
  out = []
  if inner_rows and inner_cols:
    out.append(Part("grid", inner_rows, inner_cols))
  if border_rows:
    out.append(_row_part(border_rows, tuple(range(width)), width, r, False))
  if border_cols and inner_rows:
    out.append(_row_part(border_cols, inner_rows, height, r, True))
  return tuple(out)


def candidate_count(part: Part, height: int, width: int, k: int) -> int:
  """Candidate windows per training image for each query of ``part``, as computed."""
  r = k // 2
  if part.kind == "grid":
    return (height - 2 * r) * (width - 2 * r)
  return height if part.transposed else width


def multiply_adds(image_shape, k: int, padding: str, batch: int, num_images: int) -> int:
  """Multiply-adds of one step's cross term (the convolutions): B·N·C·k²·Σ queries × candidates."""
  h, w, c = image_shape
  total = sum(len(p.rows) * len(p.cols) * candidate_count(p, h, w, k)
              for p in parts(h, w, k, padding))
  return int(batch) * int(num_images) * c * k * k * total


# ---- options and plans ------------------------------------------------------------------------

def _is_odd_size(k) -> bool:
  return (not isinstance(k, bool) and isinstance(k, numbers.Integral) and k >= 1 and k % 2 == 1)


@dataclasses.dataclass(frozen=True)
class PatchOptions(base.Options):
  """The ELS window: its size (fixed or per step) and the edge rule."""
  patch_size: int | tuple[int, ...] = base.option(
      5, "Odd window side k ≥ 1, or a sequence with one odd k per sampling step (in sampling "
      "order; its length must be the number of steps).")
  padding: str = base.option(
      "borders", "`borders` (zero padding, edges and corners apart; the authors' default) or "
      "`circular` (wrap-around; needs k ≤ min(H, W)).")

  def check(self) -> None:
    super().check()
    k = self.patch_size
    sizes = list(k) if isinstance(k, (list, tuple)) else [k]
    if not sizes or not all(_is_odd_size(s) for s in sizes):
      raise ValueError(f"{base.name('patch_size')} must be an odd int >= 1 or a non-empty "
                       f"sequence of them (one per sampling step), got {k!r}")
    validation.check_choice(self.padding, PADDINGS, name=base.name("padding"))


@dataclasses.dataclass(frozen=True)
class Options(PatchOptions, base.TemperatureOptions):
  chunk_size: int | None = base.option(
      None, "Database images per scan step (memory only; None: from a 64 MiB budget).")

  def check(self) -> None:
    super().check()
    validation.check_optional_positive_int(self.chunk_size, name=base.name("chunk_size"))


def patch_sizes(patch_size, num_steps: int) -> list[int]:
  """The patch size of each of ``num_steps`` steps from option ``patch_size`` (a schedule must
  have exactly that length)."""
  k = patch_size
  if isinstance(k, (list, tuple)):
    if len(k) != num_steps:
      raise ValueError(f"patch_size schedule has {len(k)} entries but the run has {num_steps} "
                       f"step(s); give one odd int per step, in sampling order")
    return [int(s) for s in k]
  return [int(k)] * num_steps


def check_patch(image_shape, k: int, padding: str) -> None:
  h, w, _ = image_shape
  if padding == "circular" and k > min(h, w):
    raise ValueError(f"patch_size={k} exceeds the image side min(H, W)={min(h, w)}: circular "
                     f"ELS needs at least one window inside each training image")


@flax.struct.dataclass
class Plan:
  abar: jax.Array
  patch_size: int = flax.struct.field(pytree_node=False)
  padding: str = flax.struct.field(pytree_node=False)
  temperature: float = flax.struct.field(pytree_node=False)
  chunk_size: int = flax.struct.field(pytree_node=False)


def logits_per_image(image_shape, k: int, padding: str) -> int:
  """Logits one training image adds per query image (Σ_parts queries × candidates)."""
  h, w, _ = image_shape
  return sum(len(p.rows) * len(p.cols) * candidate_count(p, h, w, k)
             for p in parts(h, w, k, padding))


def auto_chunk(image_shape, k: int, padding: str, batch: int) -> int:
  """Images per scan step so that a chunk's logits and weights (≈ 3 arrays) fit _CHUNK_BYTES."""
  per_image = 12 * batch * logits_per_image(image_shape, k, padding)
  return max(1, _CHUNK_BYTES // max(per_image, 1))


def build_plan(image_shape, abar: float, k: int, batch: int, *, padding: str,
               temperature: float, chunk_size: int | None) -> Plan:
  check_patch(image_shape, k, padding)
  chunk = chunk_size or auto_chunk(image_shape, k, padding, batch)
  return Plan(abar=jnp.float32(abar), patch_size=int(k), padding=padding,
              temperature=float(temperature), chunk_size=int(chunk))


def prepare_run(stats: Stats, abars, options: Options, batch: int) -> list[Plan]:
  sizes = patch_sizes(options.patch_size, len(abars))
  return [build_plan(stats.image_shape, abar, k, batch, padding=options.padding,
                     temperature=options.temperature, chunk_size=options.chunk_size)
          for abar, k in zip(abars, sizes)]


def prepare(stats: Stats, abar: float, options: Options, batch: int) -> Plan:
  return prepare_run(stats, [abar], options, batch)[0]


# ---- the per-chunk computation ----------------------------------------------------------------

def _pad(x: jax.Array, r: int, padding: str) -> jax.Array:
  """[..., H, W, C] padded by r on both spatial axes (zeros, or wrapped for circular)."""
  widths = [(0, 0)] * (x.ndim - 3) + [(r, r), (r, r), (0, 0)]
  return jnp.pad(x, widths, mode="wrap" if padding == "circular" else "constant")


def _windows(x_pad: jax.Array, rows, cols, k: int) -> jax.Array:
  """[B, Hp, Wp, C] padded images → windows [B, len(rows)·len(cols), k, k, C] whose top-left
  corners (in padded coordinates) are rows × cols, i.e. centred at those image pixels."""
  b, hp, wp, c = x_pad.shape
  r0, c0 = np.meshgrid(np.asarray(rows), np.asarray(cols), indexing="ij")
  du, dv = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
  index = (r0.reshape(-1, 1, 1) + du) * wp + (c0.reshape(-1, 1, 1) + dv)  # [Q, k, k]
  return jnp.take(x_pad.reshape(b, hp * wp, c), jnp.asarray(index, jnp.int32), axis=1)


@flax.struct.dataclass
class Queries:
  """One part's query side for a batch: conv filters [k, k, C, F] and window norms [B, Q]."""
  filters: jax.Array
  norms: jax.Array


def _frame(x: jax.Array, part: Part) -> jax.Array:
  return jnp.swapaxes(x, -3, -2) if part.transposed else x


def queries(x_img: jax.Array, plan: Plan) -> list[Queries]:
  """x_t [B, H, W, C] → each part's filters and query norms (the part order of `parts`)."""
  b, h, w, c = x_img.shape
  k, r = plan.patch_size, plan.patch_size // 2
  out = []
  for part in parts(h, w, k, plan.padding):
    xp = _frame(_pad(x_img, r, plan.padding), part)
    win = _windows(xp, part.rows, part.cols, k)  # [B, Q, k, k, C]
    norms = jnp.einsum("bqijc,bqijc->bq", win, win, precision=HIGHEST)
    if part.kind == "grid":
      filters = jnp.transpose(win, (2, 3, 4, 0, 1)).reshape(k, k, c, -1)  # features (b, q)
    else:  # one group per border row: features (g, b, j)
      g = len(part.rows)
      win = win.reshape(b, g, len(part.cols), k, k, c)
      filters = jnp.transpose(win, (3, 4, 5, 1, 0, 2)).reshape(k, k, c, -1)
    out.append(Queries(filters=filters, norms=norms))
  return out


def _box(y: jax.Array, k: int) -> jax.Array:
  """k×k VALID box sums over the spatial axes of [c, H, W, C] → [c, H−k+1, W−k+1] (all channels)."""
  return jax.lax.reduce_window(jnp.sum(y * y, axis=-1), 0.0, jax.lax.add, (1, k, k),
                               (1, 1, 1), "VALID")


# XLA:CPU runs a convolution through its fast (Eigen) path only in this canonical layout; any
# other output layout falls back to a loop ~10× slower, so the logits are transposed afterwards.
_DIMS = ("NHWC", "HWIO", "NHWC")
_DIRECT_DIMS = ("NHWC", "HWIO", "NCHW")
DIRECT_TAPS = 25  # measured on CPU: direct wins for k ≤ 5 (C = 1), canonical from k = 7


def part_logits(part: Part, q: Queries, images: jax.Array, valid: jax.Array, plan: Plan,
                batch: int) -> tuple[jax.Array, jax.Array, int]:
  """(logits, centre values, candidate axis) of one part for a chunk of images [c, H, W, C].

  ``grid``: logits [B, Q, 1, M] (candidates minor, so the softmax reductions run along
  contiguous memory), values [M, C]. ``rows``: logits [M, B, Q, 1] (the grouped convolution's
  output layout; transposing it costs more than it saves), values [M, G, C] (the candidate's
  centre row depends on the query's border row). ``valid`` [c] marks real images.
  """
  k, r = plan.patch_size, plan.patch_size // 2
  a = jnp.sqrt(plan.abar)
  scale = -0.5 / ((1.0 - plan.abar) * plan.temperature)
  y = _frame(images, part)
  num, _, width, chans = y.shape
  if part.kind == "grid":
    if k * k * chans <= DIRECT_TAPS:  # [c, B·Q, H', W'] straight from the convolution
      cross = jax.lax.conv_general_dilated(y, q.filters, (1, 1), "VALID",
                                           dimension_numbers=_DIRECT_DIMS, precision=HIGHEST)
      cand = cross.shape[2] * cross.shape[3]
      cross = cross.reshape(num, batch, -1, cand).transpose(1, 2, 0, 3)  # [B, Q, c, P']
    else:
      cross = jax.lax.conv_general_dilated(y, q.filters, (1, 1), "VALID",
                                           dimension_numbers=_DIMS, precision=HIGHEST)
      cand = cross.shape[1] * cross.shape[2]
      cross = cross.reshape(num, cand, batch, -1).transpose(2, 3, 0, 1)  # [B, Q, c, P']
    dist = (q.norms[:, :, None, None] + (a * a) * _box(y, k).reshape(num, cand)
            - (2.0 * a) * cross)
    logits = jnp.where(valid[:, None], scale * dist, -jnp.inf)
    values = y[:, r:y.shape[1] - r, r:width - r, :].reshape(num * cand, chans)
    return logits.reshape(batch, -1, 1, num * cand), values, -1
  g, nq = len(part.rows), len(part.cols)
  yp = jnp.pad(y, ((0, 0), (r, r), (r, r), (0, 0)))
  strips = jnp.concatenate([yp[:, h:h + k] for h in part.rows], axis=-1)  # [c, k, Wp, G·C]
  cross = jax.lax.conv_general_dilated(strips, q.filters, (1, 1), "VALID",
                                       dimension_numbers=_DIMS, precision=HIGHEST,
                                       feature_group_count=g)  # [c, 1, W, G·B·Q]
  cross = cross.reshape(num, width, g, batch, nq).transpose(0, 1, 3, 2, 4)  # [c, W, B, G, Q]
  box = _box(yp, k)[:, jnp.asarray(part.rows)]  # [c, G, W]
  sq = box.transpose(0, 2, 1)[:, :, None, :, None]  # [c, W, 1, G, 1]
  mask = jnp.asarray(np.asarray(part.mask))[None, :, None, None, :]  # [1, W, 1, 1, Q]
  ok = valid[:, None, None, None, None] & mask
  dist = q.norms.reshape(1, 1, batch, g, nq) + (a * a) * sq - (2.0 * a) * cross
  logits = jnp.where(ok, scale * dist, -jnp.inf).reshape(num * width, batch, g * nq, 1)
  values = y[:, jnp.asarray(part.rows)].transpose(0, 2, 1, 3).reshape(num * width, g, chans)
  return logits, values, 0


def _weighted_grid(p: jax.Array, values: jax.Array) -> jax.Array:
  return jnp.einsum("bqm,mc->bqc", p[:, :, 0], values, precision=HIGHEST)


def _weighted_rows(p: jax.Array, values: jax.Array) -> jax.Array:
  m, b, q, _ = p.shape
  g = values.shape[1]
  out = jnp.einsum("mbgj,mgc->bgjc", p.reshape(m, b, g, q // g), values, precision=HIGHEST)
  return out.reshape(b, q, -1)


def init_states(plan: Plan, image_shape, batch: int) -> list[softmax.SoftmaxState]:
  """Empty per-part states: max and sum [B, Q, 1], numerator [B, Q, C]."""
  h, w, c = image_shape
  out = []
  for part in parts(h, w, plan.patch_size, plan.padding):
    q = len(part.rows) * len(part.cols)
    out.append(softmax.SoftmaxState(jnp.full((batch, q, 1), -jnp.inf), jnp.zeros((batch, q, 1)),
                                    jnp.zeros((batch, q, c))))
  return out


def fold(states, qs, images: jax.Array, valid: jax.Array, plan: Plan, batch: int):
  """Folds a chunk of images [c, H, W, C] (``valid`` [c]) into every part's state."""
  h, w, _ = images.shape[1:]
  out = []
  for part, q, state in zip(parts(h, w, plan.patch_size, plan.padding), qs, states):
    logits, values, axis = part_logits(part, q, images, valid, plan, batch)
    weighted = _weighted_grid if part.kind == "grid" else _weighted_rows
    out.append(softmax.update_exact(state, logits, values, weighted=weighted, axis=axis))
  return out


def assemble(states, plan: Plan, image_shape) -> softmax.SoftmaxState:
  """Per-part states → one state over all pixels: max, sum [B, P, 1], numerator [B, P, C]."""
  h, w, _ = image_shape
  order = np.concatenate([p.pixels(w) for p in parts(h, w, plan.patch_size, plan.padding)])
  inverse = jnp.asarray(np.argsort(order), jnp.int32)
  return softmax.SoftmaxState(*(jnp.concatenate(field, axis=1)[:, inverse]
                                for field in zip(*states)))


def local_state(database: jax.Array, plan: Plan, x_t: jax.Array, image_shape,
                row_valid: jax.Array | None = None) -> softmax.SoftmaxState:
  """ELS softmax statistics of x_t [B, D] over the images (rows) of ``database`` [N, D]."""
  batch = x_t.shape[0]
  qs = queries(x_t.reshape(batch, *image_shape), plan)
  chunks, valid = chunking.split_chunks(database, min(plan.chunk_size, database.shape[0]),
                                        row_valid)

  def body(states, inputs):
    chunk, chunk_valid = inputs
    images = chunk.reshape(chunk.shape[0], *image_shape)
    return fold(states, qs, images, chunk_valid, plan, batch), None

  states, _ = jax.lax.scan(body, init_states(plan, image_shape, batch), (chunks, valid))
  return assemble(states, plan, image_shape)


def finalize(state: softmax.SoftmaxState) -> jax.Array:
  """[B, P, C] state → x̂_0 [B, D]."""
  out = softmax.finalize(state)
  return out.reshape(out.shape[0], -1)


def apply(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """x_t [B, D] → x̂_0 [B, D] (deterministic: ``key`` is unused)."""
  del key
  return finalize(local_state(stats.database, plan, x_t, stats.image_shape))


def apply_sharded(stats: Stats, plan: Plan, x_t: jax.Array, key: jax.Array | None,
                  mesh) -> jax.Array:
  """`apply` with the database sharded over ``mesh``: per-shard states merged by pmax/psum."""
  del key
  local = functools.partial(_local_state_rows, image_shape=stats.image_shape)
  out = sharding.softmax_over_shards(local, stats, plan, x_t, mesh)
  return out.reshape(out.shape[0], -1)


def _local_state_rows(database, plan, x_t, row_valid, *, image_shape):
  return local_state(database, plan, x_t, image_shape, row_valid)


base.register("els", options=Options, prepare_run=prepare_run, apply=apply,
              apply_sharded=apply_sharded)
