"""Posterior concentration diagnostics (docs/method.md §10, §11): how many training images carry the
mass.

`posterior_support` scans the whole database (in chunks over N) at one noisy batch x_t and
noise level ᾱ and reports, per sample:

* ``support`` [B]: the number of images holding ``mass`` (0.99) of the full unmasked posterior
  w_i ∝ exp(−‖x_t − a_t x_i‖² / (2σ_t² T)) (the Optimal denoiser's softmax);
* ``effective_size`` [B]: exp(entropy) of those weights; ``max_weight`` [B];
* with ``subset`` [B, k] (e.g. GoldDiff's golden subset): ``tail_mass`` [B], the full-posterior
  mass outside the subset (ε_S of docs/method.md §11), and ``subset_support`` /
  ``subset_effective_size`` of the weights renormalised over the subset
  (what GoldDiff's softmax would see unmasked);
* with ``mask_threshold`` (the PCA-locality mask of docs/method.md §4): ``masked_effective_size``
  [B, D], exp(entropy) of every coordinate's masked softmax over all N, and, with ``subset``,
  ``masked_tail_mass`` [B, D], the per-coordinate tail mass ε_S[m] that bounds GoldDiff's
  truncation error |x̂[m] − x̂_S[m]| ≤ 2 ε_S[m] (docs/method.md §11 item 2).

`golddiff_support` runs GoldDiff's retrieval for one step and reports the above for its subset.
A sharded database is gathered onto one device first (`stats.unshard`): these are diagnostics
for a few samples, not the sampler's path. Logits use the direct difference form (not the expanded one): at small σ_t they reach ~1e6.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import chunking, masks, schedules, stats as stats_lib
from golddiff_jax.denoisers import golddiff, pca_locality
from golddiff_jax.stats import Stats

HIGHEST = jax.lax.Precision.HIGHEST
_CHUNK_BYTES = 64 * 2**20
_golden_subset = jax.jit(golddiff.golden_subset)


@functools.partial(jax.jit, static_argnames=("chunk",))
def full_logits(database: jax.Array, x_t: jax.Array, abar, temperature, *,
                chunk: int) -> jax.Array:
  """[B, N] unmasked logits −‖x_t − a x_i‖² / (2σ² T), chunked over N (direct form)."""
  n = database.shape[0]
  a = jnp.sqrt(abar)
  scale = -0.5 / ((1.0 - abar) * temperature)
  chunk, starts = chunking.chunk_layout(n, chunk)

  def body(out, start):
    rows = jax.lax.dynamic_slice_in_dim(database, start, chunk, axis=0)
    diff = x_t[:, None, :] - a * rows[None]
    part = scale * jnp.sum(diff * diff, axis=-1)
    return jax.lax.dynamic_update_slice_in_dim(out, part, start, axis=1), None

  out, _ = jax.lax.scan(body, jnp.zeros((x_t.shape[0], n), jnp.float32), jnp.asarray(starts))
  return out


def _concentration(logits: jax.Array, mass: float) -> dict:
  """support / effective size / max weight of softmax(logits) along the last axis."""
  log_w = jax.nn.log_softmax(logits, axis=-1)
  w = jnp.exp(log_w)
  entropy = -jnp.sum(jnp.where(w > 0, w * log_w, 0.0), axis=-1)
  ordered = -jnp.sort(-w, axis=-1)
  before = jnp.cumsum(ordered, axis=-1) - ordered  # mass of the larger weights
  support = jnp.sum(before < mass, axis=-1)
  return {"support": support, "effective_size": jnp.exp(entropy),
          "max_weight": ordered[..., 0]}


@functools.partial(jax.jit, static_argnames=("mass",))
def _global_summary(logits, subset, *, mass):
  out = _concentration(logits, mass)
  if subset is not None:
    log_w = jax.nn.log_softmax(logits, axis=-1)
    inside = jnp.sum(jnp.exp(jnp.take_along_axis(log_w, subset, axis=1)), axis=1)
    member = _membership(subset, logits.shape[1])
    outside = jnp.sum(jnp.where(member, 0.0, jnp.exp(log_w)), axis=1)
    out["tail_mass"] = outside / (inside + outside)
    sub = _concentration(jnp.take_along_axis(logits, subset, axis=1), mass)
    out["subset_support"] = sub["support"]
    out["subset_effective_size"] = sub["effective_size"]
  return out


def _membership(subset: jax.Array, n: int) -> jax.Array:
  rows = jnp.arange(subset.shape[0])[:, None]
  return jnp.zeros((subset.shape[0], n), bool).at[rows, subset].set(True)


@jax.jit
def masked_statistics(database: jax.Array, x_t: jax.Array, locality: pca_locality.Plan,
                      subset: jax.Array | None = None) -> dict:
  """Per-coordinate masked softmax over all N: exp(entropy) [B, D] and, given ``subset``, the
  tail mass [B, D] outside it. Streams the database in chunks of ``locality.chunk_size``."""
  n, dim = database.shape
  batch = x_t.shape[0]
  chunk, starts = chunking.chunk_layout(n, locality.chunk_size)
  member = None if subset is None else _membership(subset, n)

  def body(carry, inputs):
    r, s, u, s_out = carry   # running max, Σe^{ℓ−r}, Σe^{ℓ−r}(ℓ−r), Σ_{i∉S} e^{ℓ−r}
    step, start = inputs
    rows = jax.lax.dynamic_slice_in_dim(database, start, chunk, axis=0)
    logits = pca_locality.masked_logits(x_t, rows[None], locality)
    fresh = chunking.fresh_rows(start, step, chunk)[None, :, None]
    logits = jnp.where(fresh, logits, -jnp.inf)
    r_new = jnp.maximum(r, jnp.max(logits, axis=1))  # finite from the first chunk on
    decay = jnp.exp(r - r_new)
    shift = jnp.where(jnp.isfinite(r), r - r_new, 0.0)
    centred = logits - r_new[:, None, :]
    p = jnp.exp(centred)
    pc = jnp.where(p > 0, p * centred, 0.0)
    u = decay * (u + s * shift) + jnp.sum(pc, axis=1)
    s_new = decay * s + jnp.sum(p, axis=1)
    if member is not None:
      inside = jax.lax.dynamic_slice_in_dim(member, start, chunk, axis=1)[:, :, None]
      s_out = decay * s_out + jnp.sum(jnp.where(inside, 0.0, p), axis=1)
    return (r_new, s_new, u, s_out), None

  zeros = jnp.zeros((batch, dim), jnp.float32)
  init = (jnp.full((batch, dim), -jnp.inf, jnp.float32), zeros, zeros, zeros)
  steps = jnp.arange(len(starts), dtype=jnp.int32)
  (_, s, u, s_out), _ = jax.lax.scan(body, init, (steps, jnp.asarray(starts)))
  out = {"masked_effective_size": jnp.exp(jnp.log(s) - u / s)}
  if member is not None:
    out["masked_tail_mass"] = s_out / s
  return out


def posterior_support(stats: Stats, x_t: jax.Array, abar: float, *, temperature: float = 1.0,
                      mass: float = 0.99, subset: jax.Array | None = None,
                      mask_threshold: float | None = None, mask_impl: str = "auto",
                      mask_variant: dict | None = None,
                      chunk_size: int | None = None) -> dict:
  """Concentration of the posterior at flattened x_t [B, D] and noise level ``abar``.

  Args:
    stats: the dataset statistics (database [N, D]).
    x_t: [B, D] noisy samples.
    abar: ᾱ_t (a Python float).
    temperature: softmax temperature T.
    mass: the posterior mass the ``support`` counts must hold.
    subset: optional [B, k] int32 candidate indices per sample (e.g. a golden subset).
    mask_threshold: θ of the PCA-locality mask; None skips the per-coordinate statistics.
    mask_impl: contraction form for the masked statistics (see `pca_locality`).
    mask_variant: the mask's variant options (`masks.PUBLISHED` keys; None: published rule).
    chunk_size: database rows per scan step (None: from a memory budget).

  Returns:
    A dict of jax arrays (keys in the module docstring).
  """
  if not 0.0 < mass <= 1.0:
    raise ValueError(f"mass must be in (0, 1], got {mass!r}")
  stats = stats_lib.unshard(stats)
  x_t = jnp.asarray(x_t, jnp.float32)
  batch, dim = x_t.shape
  if dim != stats.dim:
    raise ValueError(f"x_t has dimension {dim} but the stats have {stats.dim}")
  if subset is not None:
    subset = jnp.asarray(subset, jnp.int32)
  chunk = chunk_size or max(1, _CHUNK_BYTES // (8 * batch * dim))
  logits = full_logits(stats.database, x_t, jnp.float32(abar), jnp.float32(temperature),
                       chunk=int(chunk))
  out = dict(_global_summary(logits, subset, mass=float(mass)))
  if mask_threshold is not None:
    mask = masks.mask_for(stats, abar, {**(mask_variant or {}), "mask_threshold": mask_threshold})
    local = pca_locality.build_plan(mask, abar, batch, mask_impl=mask_impl,
                                    temperature=temperature, chunk_size=chunk_size)
    out.update(masked_statistics(stats.database, x_t, local, subset))
  return out


def golddiff_support(stats: Stats, x_t: jax.Array, abar: float, key: jax.Array,
                     **options) -> dict:
  """`posterior_support` of the golden subset GoldDiff retrieves for x_t [B, D] at ``abar``.

  ``options`` are GoldDiff's (see `golddiff_jax.denoisers.golddiff`). Adds ``subset`` [B, k_t]
  and the step's budgets ``m`` and ``k``.
  """
  options = golddiff.Options(**options)
  stats = stats_lib.unshard(stats)
  plan = golddiff.prepare(stats, abar, options, x_t.shape[0])
  subset = _golden_subset(stats, plan, jnp.asarray(x_t, jnp.float32), key)
  variant = options.mask_variant()
  out = posterior_support(stats, x_t, abar, temperature=float(options.temperature),
                          subset=subset, mask_threshold=float(variant.pop("mask_threshold")),
                          mask_variant=variant, mask_impl=options.mask_impl,
                          chunk_size=options.subset_chunk_size)
  out.update(subset=subset, m=plan.m, k=plan.k)
  return out


def trajectory_support(stats: Stats, latents, x0_trajectory, timesteps, *, mass: float,
                       temperature: float = 1.0) -> dict:
  """`posterior_support` along a sampled trajectory: at each step the sampler's own x_t (rebuilt
  from ``latents`` [n, H, W, C] and the x̂_0 of ``x0_trajectory`` [S, n, H, W, C] by the DDIM
  update), the mean over samples of ``support``, ``effective_size`` and ``max_weight`` per step.
  The full unmasked posterior over all N, on one device (a few samples)."""
  n, steps = len(latents), len(timesteps)
  stats = stats_lib.unshard(stats)
  x = jnp.asarray(np.asarray(latents).reshape(n, -1))
  rows = {"support_mean": [], "effective_size_mean": [], "max_weight_mean": []}
  for j, t in enumerate(timesteps):
    abar = schedules.alpha_bar(int(t))
    found = posterior_support(stats, x, abar, temperature=temperature, mass=mass)
    for name in ("support", "effective_size", "max_weight"):
      rows[f"{name}_mean"].append(float(np.mean(np.asarray(found[name]))))
    x0 = jnp.asarray(np.asarray(x0_trajectory[j]).reshape(n, -1))
    x = schedules.ddim_step(x, x0, abar, schedules.alpha_bar_prev(int(t), steps))
  return {"what": "full unmasked posterior over all N at the sampler's x_t (first samples)",
          "num_samples": n, "mass": float(mass), "timesteps": timesteps, **rows}
