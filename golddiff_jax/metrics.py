"""Evaluation metrics (docs/method.md §8): a method's images against a target, and memorization.

Every input is a batch of model-space images in [−1, 1], shape [B, ...] (NHWC or flat), NumPy or
JAX. Before any metric both sides are post-processed with `to_unit`, clamp((x + 1)/2, 0, 1)
(docs/method.md §2.6, §8.2), and flattened per sample to D values. ``x`` is the method, ``y`` the
target: the reference network's images in Table 1 (experiments/table1.py), a sweep's baseline run
in experiments/sweep.py.

* `mse`, `r2`, `l1` return the mean over samples as a Python float, or the per-sample values
  [B] (NumPy) with ``per_sample=True``. They are exactly the formulas of docs/method.md §8.4:

      MSE = mean_b (1/D) Σ_d (x_bd − y_bd)²
      r²  = mean_b [1 − Σ_d (x_bd − y_bd)² / (D·v_b)],
            v_b = Σ_d (y_bd − ȳ_b)² / (D − 1),  v_b := 1 where v_b == 0
      L1  = mean_b (1/D) Σ_d |x_bd − y_bd|   (= the mean over all entries: every sample has D)

  The unbiased v_b makes the second r² term SSE/SST·(D − 1)/D rather than the textbook SSE/SST,
  as in the published code; r² is negative when the method is worse than the target's mean
  pixel value. Per-sample values are computed in float32 (the published code's precision) by a
  jitted core; the mean over samples is taken in float64. The variance is taken of
  y_b − y_b[0] (shift invariant), so a constant target image has v_b exactly 0.
* `trajectory_metrics` applies them at every sampling step of two x̂_0 trajectories [S, B, ...]
  (docs/method.md §8.2: the reported score is the last step).
* `memorization` scores samples against the training set by nearest neighbours (see its
  docstring for the criterion and why).

Bad input (shape mismatch, NaN/Inf, too few values) raises ValueError naming the problem.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import chunking

HIGHEST = jax.lax.Precision.HIGHEST
MEMORIZATION_THRESHOLD = 1.0 / 3.0
DEFAULT_CHUNK = 1024


def to_unit(x: Any) -> jax.Array:
  """Model space [−1, 1] → display space: clamp((x + 1)/2, 0, 1) in float32."""
  return jnp.clip((jnp.asarray(x, jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# Validation (host side, at the boundary)
# ----------------------------------------------------------------------------------------------

def _array(value: Any, name: str, min_ndim: int) -> jax.Array:
  if not isinstance(value, jax.Array):
    try:
      value = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - any conversion failure is bad input.
      raise ValueError(f"{name} could not be converted to an array: {e}") from e
  if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
    raise ValueError(f"{name} must hold real numbers, got dtype {value.dtype}")
  if value.ndim < min_ndim:
    raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape "
                     f"{tuple(value.shape)}")
  if 0 in value.shape:
    raise ValueError(f"{name} is empty: shape {tuple(value.shape)}")
  value = jnp.asarray(value, jnp.float32)
  if not bool(jnp.all(jnp.isfinite(value))):
    raise ValueError(f"{name} contains NaN or Inf values")
  return value


def _pair(x: Any, y: Any, *, lead: int, names=("x", "y")) -> tuple[jax.Array, jax.Array]:
  """Both as float32 arrays of equal shape, flattened to [*shape[:lead], D]."""
  x = _array(x, names[0], lead + 1)
  y = _array(y, names[1], lead + 1)
  if x.shape != y.shape:
    raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                     f"{tuple(x.shape)} and {tuple(y.shape)}")
  flat = (*x.shape[:lead], -1)
  return x.reshape(flat), y.reshape(flat)


def _check_r2_dim(d: int) -> None:
  if d < 2:
    raise ValueError(f"r² needs at least 2 values per sample (unbiased variance), got D={d}")


# ----------------------------------------------------------------------------------------------
# MSE, r², L1 (docs/method.md §8.4)
# ----------------------------------------------------------------------------------------------

@jax.jit
def _per_sample(x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
  """x, y [B, D] model space → per-sample MSE, r², L1 [B] of the clamped unit-space images."""
  u, v = to_unit(x), to_unit(y)
  d = u.shape[-1]
  diff = u - v
  sse = jnp.sum(diff * diff, axis=-1)
  shifted = v - v[:, :1]  # v_b is shift invariant; a constant image gives exactly 0
  centered = shifted - jnp.mean(shifted, axis=-1, keepdims=True)
  var = jnp.sum(centered * centered, axis=-1) / max(d - 1, 1)
  var = jnp.where(var == 0, 1.0, var)
  return {"mse": sse / d, "r2": 1.0 - sse / (d * var),
          "l1": jnp.mean(jnp.abs(diff), axis=-1)}


def _reduce(values: jax.Array, per_sample: bool) -> float | np.ndarray:
  values = np.asarray(jax.device_get(values))
  return values if per_sample else float(np.mean(values.astype(np.float64)))


def mse(x: Any, y: Any, *, per_sample: bool = False) -> float | np.ndarray:
  """Mean squared error of the clamped unit-space images (docs/method.md §8.4)."""
  return _reduce(_per_sample(*_pair(x, y, lead=1))["mse"], per_sample)


def r2(x: Any, y: Any, *, per_sample: bool = False) -> float | np.ndarray:
  """r² with the unbiased per-sample variance of ``y``
  (docs/method.md §8.4, including (D − 1)/D)."""
  x, y = _pair(x, y, lead=1)
  _check_r2_dim(x.shape[-1])
  return _reduce(_per_sample(x, y)["r2"], per_sample)


def l1(x: Any, y: Any, *, per_sample: bool = False) -> float | np.ndarray:
  """Mean absolute error of the clamped unit-space images (logged by the paper, not tabled)."""
  return _reduce(_per_sample(*_pair(x, y, lead=1))["l1"], per_sample)


def compare(x: Any, y: Any, *, per_sample: bool = False) -> dict:
  """``{"mse", "r2", "l1"}`` of ``x`` against ``y`` in one pass (floats, or [B] arrays)."""
  x, y = _pair(x, y, lead=1)
  _check_r2_dim(x.shape[-1])
  return {k: _reduce(v, per_sample) for k, v in _per_sample(x, y).items()}


def trajectory_metrics(traj_x: Any, traj_y: Any) -> dict:
  """Per-step metrics of two x̂_0 trajectories [S, B, ...] (method, target; docs/method.md §8.2).

  Returns ``mse_per_step``, ``r2_per_step``, ``l1_per_step`` (lists of S floats, each the mean
  over the B samples at that step) and ``mse``, ``r2``, ``l1``: the last step's values, i.e. the
  scores of the final images.
  """
  x, y = _pair(traj_x, traj_y, lead=2, names=("traj_x", "traj_y"))
  steps, batch, d = x.shape
  _check_r2_dim(d)
  values = _per_sample(x.reshape(steps * batch, d), y.reshape(steps * batch, d))
  out = {}
  for name, per in values.items():
    per_step = np.asarray(jax.device_get(per), np.float64).reshape(steps, batch).mean(axis=1)
    out[f"{name}_per_step"] = [float(v) for v in per_step]
    out[name] = float(per_step[-1])
  return out


# ----------------------------------------------------------------------------------------------
# Memorization (nearest neighbours in the training set)
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("chunk",))
def _nearest_two(samples: jax.Array, database: jax.Array, *,
                 chunk: int) -> tuple[jax.Array, jax.Array]:
  """Indices [B, 2] and L2 distances [B, 2] (ascending) of each sample's two nearest rows.

  Both sides are clamped to unit space and shifted by −0.5 (distances are translation invariant;
  centring shrinks the norms, so the expanded form ‖q‖² + ‖c‖² − 2⟨q, c⟩ cancels less). The
  scan over database chunks keeps a running top-2, so memory is O(B·chunk) for the distances
  plus one [chunk, D] slice of the database. The two winners' distances are then recomputed
  directly from their differences.
  """
  n = database.shape[0]
  q = to_unit(samples) - 0.5
  q_sq = jnp.sum(q * q, axis=-1, keepdims=True)
  chunk, starts = chunking.chunk_layout(n, chunk)
  batch = q.shape[0]

  def body(carry, step):
    best_d, best_i = carry
    start = jnp.asarray(starts)[step]
    rows = to_unit(jax.lax.dynamic_slice_in_dim(database, start, chunk, axis=0)) - 0.5
    sq = q_sq + jnp.sum(rows * rows, axis=-1)[None, :] - 2.0 * jnp.matmul(
        q, rows.T, precision=HIGHEST)
    fresh = chunking.fresh_rows(start, step, chunk)  # a clamped last chunk overlaps the previous
    sq = jnp.where(fresh[None, :], jnp.maximum(sq, 0.0), jnp.inf)
    idx = jnp.broadcast_to(start + jnp.arange(chunk, dtype=jnp.int32), (batch, chunk))
    cand_d = jnp.concatenate([best_d, sq], axis=1)  # earlier rows first: ties keep lower index
    cand_i = jnp.concatenate([best_i, idx], axis=1)
    neg, pos = jax.lax.top_k(-cand_d, 2)
    return (-neg, jnp.take_along_axis(cand_i, pos, axis=1)), None

  init = (jnp.full((batch, 2), jnp.inf, jnp.float32), jnp.zeros((batch, 2), jnp.int32))
  (_, index), _ = jax.lax.scan(body, init, jnp.arange(len(starts)))
  winners = to_unit(database[index]) - 0.5  # [B, 2, D]
  diff = q[:, None, :] - winners
  dist = jnp.sqrt(jnp.einsum("bkd,bkd->bk", diff, diff, precision=HIGHEST))
  order = jnp.argsort(dist, axis=1, stable=True)
  return jnp.take_along_axis(index, order, axis=1), jnp.take_along_axis(dist, order, axis=1)


def memorization(samples: Any, database: Any, *, threshold: float = MEMORIZATION_THRESHOLD,
                 chunk_size: int = DEFAULT_CHUNK) -> dict:
  """Nearest-neighbour memorization score of ``samples`` [B, ...] against ``database`` [N, ...].

  For each sample b, with d1_b ≤ d2_b the L2 distances to its nearest and second-nearest
  training images (both clamped to unit space [0, 1], i.e. on the same footing as the other
  metrics), the ratio ρ_b = d1_b / d2_b is small when the sample is much closer to one training
  image than to any other, i.e. a near copy. A sample counts as memorized when ρ_b < threshold
  (1/3 by default). This is the nearest/second-nearest criterion used for pixel-space
  memorization by Yoon et al. 2023 and Gu et al. 2023, a simplification of Carlini et al.
  2023's test (distance to the nearest neighbour relative to the nearest few). It is chosen
  because it needs no learned features (SSCD, as in Somepalli et al., would be a network we do
  not have offline), it is scale free (no absolute distance threshold to tune per dataset or
  resolution), and it separates the regimes that matter here: the Optimal denoiser reproduces
  training images (ρ ≈ 0), while a generalising model lands between images (ρ near 1).
  If d2_b = 0 (the sample equals two identical training images) ρ_b is 0.

  The database is scanned in chunks of ``chunk_size`` rows with a running top-2 (memory
  O(B·chunk), distances at precision HIGHEST; N need not divide by the chunk size); the two
  reported distances are recomputed directly from the differences.

  Returns a dict: ``index`` [B, 2] (nearest, second nearest), ``distance`` [B, 2] (d1, d2, unit
  space), ``ratio`` [B], ``memorized`` [B] bool, and the summaries ``fraction_memorized``,
  ``ratio_median``, ``nearest_distance_mean``, ``nearest_rms_mean`` (d1/√D: the per-value RMS
  difference to the nearest image) and ``threshold``.
  """
  samples = _array(samples, "samples", 2)
  database = _array(database, "database", 2)
  samples = samples.reshape(samples.shape[0], -1)
  database = database.reshape(database.shape[0], -1)
  if samples.shape[1] != database.shape[1]:
    raise ValueError(f"samples have {samples.shape[1]} values per image but the database has "
                     f"{database.shape[1]}")
  if database.shape[0] < 2:
    raise ValueError(f"the database needs at least 2 images for a nearest/second-nearest ratio, "
                     f"got {database.shape[0]}")
  if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
      or not 0.0 < threshold <= 1.0):
    raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral)
      or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
  index, dist = jax.device_get(_nearest_two(samples, database, chunk=int(chunk_size)))
  index, dist = np.asarray(index), np.asarray(dist, np.float64)
  ratio = np.divide(dist[:, 0], dist[:, 1], out=np.zeros(len(dist)), where=dist[:, 1] > 0)
  memorized = ratio < threshold
  return {"index": index, "distance": dist, "ratio": ratio, "memorized": memorized,
          "fraction_memorized": float(np.mean(memorized)),
          "ratio_median": float(np.median(ratio)),
          "nearest_distance_mean": float(np.mean(dist[:, 0])),
          "nearest_rms_mean": float(np.mean(dist[:, 0]) / np.sqrt(samples.shape[1])),
          "threshold": float(threshold)}
