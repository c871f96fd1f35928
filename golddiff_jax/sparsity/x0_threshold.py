"""The training-free sparse variant: soft-threshold every analytical x̂_0 in a fixed basis.

One post-denoise transform, applied by the sampler to whatever denoiser ran (optimal, wiener,
pca_locality, golddiff, …), so every analytical method gets it without per-method code:

* ``basis="pca"``: c = Vᵀ(x̂_0 − μ), c ← soft(c, λ_t), x̂_0 ← μ + V·c, with μ = ``stats.mean`` and
  V = ``stats.eigvecs`` (for natural images, where sparsity is plausible only in PCA
  coordinates);
* ``basis="pixel"``: x̂_0 ← soft(x̂_0, λ_t) coordinate by coordinate (the direct analogue for
  coordinate-sparse data, whose sparse value is 0).

λ_t is the threshold of the ``x0``-target population minimiser of
`golddiff_jax.sparsity.penalties` applied to an analytical posterior mean: λ_t = r/2 with SNR
weighting (``t_weight="snr"``, the same at every t) or r·σ_t²/(2ᾱ_t) with ``"one"``.

`trace` logs the two sparsities side by side from a trajectory, in one place: s_t = the mean
number of basis coordinates with |c| > δ, d_eff(t) = Σ_i ᾱ_tλ_i/(σ_t² + ᾱ_tλ_i) (the Wiener
shrink factors' sum: the dimension "seen" at noise level t) and, when given, GoldDiff's k_t.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import schedules
from golddiff_jax.sparsity.penalties import T_WEIGHTS, soft_threshold

BASES = ("pca", "pixel")


@dataclasses.dataclass(frozen=True)
class Threshold:
  """A hashable (static) description of the x̂_0 soft threshold."""
  r: float
  basis: str = "pca"
  t_weight: str = "snr"

  def __post_init__(self):
    if isinstance(self.r, bool) or not isinstance(self.r, (int, float)) or not (
        np.isfinite(self.r) and self.r >= 0):
      raise ValueError(f"x0 threshold r must be a finite number >= 0, got {self.r!r}")
    if self.basis not in BASES:
      raise ValueError(f"x0 threshold basis must be one of {list(BASES)}, got {self.basis!r}")
    if self.t_weight not in T_WEIGHTS:
      raise ValueError(f"x0 threshold t_weight must be one of {list(T_WEIGHTS)}, got "
                       f"{self.t_weight!r}")

  def level(self, abar):
    """λ_t at ᾱ_t (a number or array)."""
    return self.r / 2 if self.t_weight == "snr" else self.r * (1 - abar) / (2 * abar)


def to_basis(stats, x: jax.Array, basis: str) -> jax.Array:
  """Coordinates [B, D] of flattened x [B, D] in ``basis``."""
  if basis == "pixel":
    return x
  return jnp.matmul(x - stats.mean, stats.eigvecs, precision=jax.lax.Precision.HIGHEST)


def apply(stats, x0: jax.Array, abar, spec: Threshold | None) -> jax.Array:
  """x̂_0 [B, D] soft-thresholded per ``spec`` (unchanged for None or r = 0). Jit-able."""
  if spec is None or spec.r == 0:
    return x0
  level = spec.level(abar)
  if spec.basis == "pixel":
    return soft_threshold(x0, level)
  c = soft_threshold(to_basis(stats, x0, "pca"), level)
  return stats.mean + jnp.matmul(c, stats.eigvecs.T, precision=jax.lax.Precision.HIGHEST)


def d_eff(eigvals, abar: float) -> float:
  """Σ_i ᾱλ_i/(1 − ᾱ + ᾱλ_i)."""
  lam = np.asarray(eigvals, np.float64)
  return float(np.sum(abar * lam / (1.0 - abar + abar * lam)))


def trace(stats, x0_trajectory, timesteps: Sequence[int], *, basis: str = "pca",
          delta: float = 1e-2, k_t: Sequence[int] | None = None) -> list[dict]:
  """Per step: t, s_t (mean over samples of #{|c| > δ} in ``basis``), d_eff(t) and k_t."""
  traj = np.asarray(x0_trajectory, np.float32)
  traj = traj.reshape(traj.shape[0], traj.shape[1], -1)
  if basis not in BASES:
    raise ValueError(f"basis must be one of {list(BASES)}, got {basis!r}")
  rows = []
  for j, t in enumerate(timesteps):
    c = np.asarray(to_basis(stats, jnp.asarray(traj[j]), basis))
    abar = schedules.alpha_bar(int(t))
    rows.append({"t": int(t), "s_t": float(np.mean(np.sum(np.abs(c) > delta, axis=1))),
                 "d_eff": d_eff(stats.eigvals, abar),
                 "k_t": None if k_t is None else int(k_t[j])})
  return rows
