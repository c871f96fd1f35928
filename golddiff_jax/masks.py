"""PCA-locality masks (docs/method.md §4) and their dense, tiled and sparse forms.

For a noise level ᾱ the Wiener operator is L̃ = V diag(s) Vᵀ with s = ᾱλ/(σ² + ᾱλ), σ² = 1 − ᾱ.
The published mask is L̃ with each row n divided by its diagonal L̃[n, n] (a diagonal entry with
magnitude below 1e-6 is replaced by 1, in L̃ too), then binarised with the global relative threshold
|M̃| ≥ θ·max|M̃|. Column m of the mask lists the inputs n that feed output coordinate m, so the
masked distance is ``delta @ M`` (contraction over the row index).

On real images that rule is ill-posed: a pixel that (almost) never changes has a diagonal of ~1e-6,
its row of M̃ reaches |M̃| ≫ 1 and sets the global maximum, and every well-conditioned entry falls
below θ·max (docs/method.md §4.2). Three knobs make the mask well defined; each at 0 / "global"
reproduces the published rule exactly:

* ``eig_floor`` δ: the covariance eigenvalues are floored, λ ← max(λ, δ), before the shrink factors
  (the Wiener denoiser uses the same floor). In [−1, 1] units the 8-bit quantisation variance is
  (2/255)²/12 ≈ 5.1e-6, a natural lower scale;
* ``diag_floor`` ρ: rows are normalised by max(|L̃[n, n]|, ρ·max_k |L̃[k, k]|) instead of their own
  diagonal (the row's own entry is kept);
* ``threshold_scope``: ``global`` (θ relative to the largest |M̃| of the whole matrix) or ``output``
  (θ relative to the largest |M̃| in each output column).

Masks are built once per sampling run on the accelerator (float32, precision HIGHEST) and then
converted on the host into the static structure that the chosen contraction needs.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_DIAG_EPS = 1e-6
HIGHEST = jax.lax.Precision.HIGHEST
SCOPES = ("global", "output")
# The mask options every masked denoiser accepts, with the published rule's values (θ is set per
# method and dataset by the configs; the floors and the scope default to the published rule).
PUBLISHED = {"eig_floor": 0.0, "diag_floor": 0.0, "threshold_scope": "global"}


def check_mask_options(options: Mapping[str, Any]) -> None:
  """Raises ValueError unless the mask variant options (`PUBLISHED`'s keys) are valid."""
  for name in ("eig_floor", "diag_floor"):
    value = options.get(name, PUBLISHED[name])
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not np.isfinite(value) or value < 0):
      raise ValueError(f"{name} must be a finite number >= 0 (0: the published rule), "
                       f"got {value!r}")
  if options.get("diag_floor", 0.0) >= 1.0:
    raise ValueError(f"diag_floor is relative to the largest diagonal entry and must be < 1, "
                     f"got {options['diag_floor']!r}")
  scope = options.get("threshold_scope", PUBLISHED["threshold_scope"])
  if scope not in SCOPES:
    raise ValueError(f"threshold_scope must be one of {SCOPES}, got {scope!r}")


def floored(eigvals: jax.Array, eig_floor) -> jax.Array:
  """λ ← max(λ, δ): the eigenvalue floor shared by the Wiener denoiser and the masks."""
  return jnp.maximum(eigvals, jnp.asarray(eig_floor, eigvals.dtype))


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


@functools.partial(jax.jit, static_argnames=("binary", "scope"))
def mask_from_operator(operator: jax.Array, threshold, *, binary: bool = True,
                       diag_floor=0.0, scope: str = "global") -> jax.Array:
  """Row-normalises L̃ by its (floored) diagonal and thresholds it; returns M [D, D] float32.

  With ``diag_floor`` = 0 and ``scope`` = "global" this is the published rule: a diagonal entry
  with |L̃[n, n]| < 1e-6 is replaced by 1 (in L̃ too), row n is divided by L̃[n, n], and entries with
  |M̃| ≥ θ·max|M̃| are kept.
  """
  original = jnp.diagonal(operator)
  small = jnp.abs(original) < _DIAG_EPS
  diag = jnp.where(small, 1.0, original)
  idx = jnp.arange(operator.shape[0])
  operator = operator.at[idx, idx].set(diag)  # the published code writes the 1 into L̃ as well.
  floor = diag_floor * jnp.max(jnp.abs(original))  # relative to the operator's own scale
  divisor = jnp.where(jnp.abs(diag) < floor, floor, diag)
  normalised = operator / divisor[:, None]
  normalised = normalised.at[idx, idx].set(1.0)  # a row's own entry is 1 (exactly so unfloored)
  if not binary:
    return normalised
  magnitude = jnp.abs(normalised)
  if scope == "output":
    tau = threshold * jnp.max(magnitude, axis=0, keepdims=True)
  else:
    tau = threshold * jnp.max(magnitude)
  return (magnitude >= tau).astype(jnp.float32)


def locality_mask(eigvals: jax.Array, eigvecs: jax.Array, abar: float, threshold: float, *,
                  eig_floor: float = 0.0, diag_floor: float = 0.0,
                  threshold_scope: str = "global") -> jax.Array:
  """The binary PCA-locality mask M_t [D, D] (float32 0/1) at noise level ᾱ = ``abar``.

  The keyword arguments select the variant (module docstring); their defaults are the published
  rule.
  """
  operator = wiener_operator(floored(eigvals, eig_floor), eigvecs, abar)
  return mask_from_operator(operator, threshold, diag_floor=diag_floor, scope=threshold_scope)


def mask_for(stats, abar: float, options: Mapping[str, Any]) -> jax.Array:
  """`locality_mask` of ``stats`` with a denoiser's options (``mask_threshold`` and the variant
  options of `PUBLISHED`, which default to the published rule)."""
  variant = {name: options.get(name, default) for name, default in PUBLISHED.items()}
  return locality_mask(stats.eigvals, stats.eigvecs, abar, float(options["mask_threshold"]),
                       eig_floor=float(variant["eig_floor"]),
                       diag_floor=float(variant["diag_floor"]),
                       threshold_scope=variant["threshold_scope"])


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


class TiledForm(NamedTuple):
  """A mask regrouped by output tiles (see `tiled_form`); D' = groups·G is the tiled layout.

  Attributes:
    index: [groups, U] int32 — the union of the inputs feeding group g, as positions in the
      tiled layout; padding slots hold D' (an appended zero column).
    sub: [groups, U, G] float32 — M[index[g, u], output j of group g] (0 in padding).
    order: [D'] int32 — the natural coordinate at each tiled position (D for padding outputs).
    position: [D] int32 — the tiled position of each natural coordinate (inverse of ``order``).
  """
  index: np.ndarray
  sub: np.ndarray
  order: np.ndarray
  position: np.ndarray

  @property
  def cost_ratio(self) -> float:
    """Multiply-adds of the tiled contraction relative to the dense D×D one (padding counted)."""
    groups, width, size = self.sub.shape
    return groups * width * size / float(self.position.size) ** 2


def tile_groups(image_shape: tuple[int, int, int], tile: int) -> np.ndarray:
  """Output groups [groups, G]: one channel of a ``tile``×``tile`` block of pixels per group, in
  natural (H, W, C) coordinates; tiles cut by the image border are padded with D."""
  height, width, channels = (int(v) for v in image_shape)
  if tile < 1:
    raise ValueError(f"tile must be >= 1, got {tile}")
  dim = height * width * channels
  coords = np.arange(dim).reshape(height, width, channels)
  rows, cols = -(-height // tile), -(-width // tile)
  padded = np.full((rows * tile, cols * tile, channels), dim, np.int64)
  padded[:height, :width] = coords
  # [rows, tile, cols, tile, C] → [C, rows, cols, tile·tile]
  blocks = padded.reshape(rows, tile, cols, tile, channels).transpose(4, 0, 2, 1, 3)
  return blocks.reshape(channels * rows * cols, tile * tile)


def tiled_form(mask: np.ndarray, image_shape: tuple[int, int, int], tile: int) -> TiledForm:
  """Regroups a [D, D] mask so that each group of outputs reads only the inputs it needs.

  Outputs are grouped by `tile_groups`; group g's inputs are the union U_g of its columns'
  supports. The masked distance of the outputs in g is then a [·, |U_g|] × [|U_g|, G] product
  instead of [·, D] × [D, G]: exact, and cheaper by `TiledForm.cost_ratio` when the mask is local.
  """
  mask = np.asarray(mask) != 0
  dim = mask.shape[0]
  if int(np.prod(image_shape)) != dim:
    raise ValueError(f"image_shape {tuple(image_shape)} does not match a mask of size {dim}")
  groups = tile_groups(image_shape, tile)
  num_groups, size = groups.shape
  order = groups.reshape(-1).astype(np.int32)
  real = order < dim
  position = np.empty(dim, np.int32)
  position[order[real]] = np.nonzero(real)[0]
  padded_mask = np.concatenate([mask, np.zeros((dim, 1), bool)], axis=1)  # column D: padding
  unions = [np.nonzero(padded_mask[:, g].any(axis=1))[0] for g in groups]
  width = max(max(len(u) for u in unions), 1)
  index = np.full((num_groups, width), order.size, np.int32)
  sub = np.zeros((num_groups, width, size), np.float32)
  for g, (cols, rows) in enumerate(zip(groups, unions)):
    index[g, :rows.size] = position[rows]
    sub[g, :rows.size] = padded_mask[np.ix_(rows, cols)]
  return TiledForm(index=index, sub=sub, order=order, position=position)


def dense_from_tiled(form: TiledForm) -> np.ndarray:
  """Inverse of `tiled_form` (for tests)."""
  dim = form.position.size
  mask = np.zeros((dim + 1, dim + 1), np.float32)
  order = np.append(form.order, dim)  # tiled position D' (padding) → natural D
  rows = order[form.index]                                  # [groups, U] natural inputs
  cols = form.order.reshape(form.sub.shape[0], -1)          # [groups, G] natural outputs
  g, u, j = np.nonzero(form.sub)
  mask[rows[g, u], cols[g, j]] = 1.0
  return mask[:dim, :dim]
