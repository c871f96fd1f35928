"""Network samplers at any step count K on the project's schedule (`golddiff_jax.schedules`).

Both run on the respaced timesteps τ_1 < … < τ_K with τ_K = 999 and τ_1 = 0
(`respaced_timesteps`; K = 1 is the single step τ = 999), starting from x_T ~ N(0, I):

* ``ddpm``: ancestral sampling on the respaced schedule, β′_k = 1 − ᾱ_{τ_k}/ᾱ_{τ_{k−1}} with
  ᾱ_{τ_0} = 1; x_{k−1} = posterior mean of q(x_{τ_{k−1}} | x_{τ_k}, clip(x̂_0, −1, 1))
  + √β̃_k·z, β̃_k = β′_k(1 − ᾱ_{τ_{k−1}})/(1 − ᾱ_{τ_k}), no noise on the last step (the clip is
  diffusers' ``clip_sample=True`` default: at large t a small ε̂ error is divided by √ᾱ_t ≈ 0.006);
* ``ddim``: η = 0, the project's update (`schedules.ddim_step`, clip_sample on the position term).

``eps_fn(params, x [B, ...], t [B] int32) -> ε̂`` is any ε-model (static, hashable, e.g. a flax
module's ``apply`` wrapped by `network_eps`). The noise of sample i at step k is drawn from
fold_in(fold_in(key, i), k), so a sample's randomness depends on its global index and the key
only (not on the batch it runs in). The loop is one `lax.scan` (one compile per K). Data must
live in [−1, 1] (the toy data do).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import schedules

SAMPLERS = ("ddpm", "ddim")


def check_steps(num_steps) -> int:
  """K as an int in [1, T]; ValueError otherwise."""
  t = schedules.NUM_TRAIN_TIMESTEPS
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not (
      1 <= num_steps <= t):
    raise ValueError(f"number of sampling steps K must be an int in [1, {t}], got {num_steps!r}")
  return int(num_steps)


def check_eval(e) -> None:
  """Checks a run's ``eval`` section: ``ks`` (increasing, each in [1, T]), ``samplers`` (a
  non-empty subset of `SAMPLERS`) and ``params`` (ema | raw); ValueError naming the field."""
  ks = [check_steps(k) for k in e.ks]
  if not ks or ks != sorted(set(ks)):
    raise ValueError(f"eval.ks must be a non-empty increasing list, got {list(e.ks)}")
  bad = [s for s in e.samplers if s not in SAMPLERS]
  if bad or not e.samplers:
    raise ValueError(f"eval.samplers must be a non-empty subset of {list(SAMPLERS)}, "
                     f"got {list(e.samplers)}")
  if e.params not in ("ema", "raw"):
    raise ValueError(f"eval.params must be 'ema' or 'raw', got {e.params!r}")


def respaced_timesteps(num_steps: int) -> np.ndarray:
  """τ_K > … > τ_1 in sampling order: round(k·(T−1)/(K−1)) descending, [T−1] for K = 1."""
  k = check_steps(num_steps)
  last = schedules.NUM_TRAIN_TIMESTEPS - 1
  if k == 1:
    return np.array([last], np.int64)
  return np.round(np.linspace(last, 0, k)).astype(np.int64)


def respaced_schedule(num_steps: int) -> dict[str, np.ndarray]:
  """Per sampling step (float64): t, ᾱ_t, ᾱ_prev (1 after the last step) and β′."""
  ts = respaced_timesteps(num_steps)
  abars = schedules.alphas_cumprod().astype(np.float64)
  abar = abars[ts]
  abar_prev = np.append(abar[1:], 1.0)
  return {"t": ts, "abar": abar, "abar_prev": abar_prev, "beta": 1.0 - abar / abar_prev}


def _x0(eps_hat, x, abar):
  return (x - jnp.sqrt(1.0 - abar) * eps_hat) / jnp.sqrt(abar)


def network_eps(module) -> Callable:
  """``(params, x, t) -> module.apply({"params": params}, x, t, train=False)`` (hashable per
  module; the MLP and the U-Net both take ``train``)."""
  return _NetworkEps(module)


class _NetworkEps:
  def __init__(self, module):
    self.module = module

  def __call__(self, params, x, t):
    return self.module.apply({"params": params}, x, t, train=False)

  def __hash__(self):
    return hash(self.module)

  def __eq__(self, other):
    return isinstance(other, _NetworkEps) and other.module == self.module


@functools.partial(jax.jit, static_argnames=("eps_fn", "sampler", "num_steps"))
def sample(eps_fn: Callable, params, latents: jax.Array, key: jax.Array, *, sampler: str,
           num_steps: int, index_offset: int | jax.Array = 0) -> jax.Array:
  """Runs ``sampler`` for ``num_steps`` steps from ``latents`` [B, ...]; returns x_0 [B, ...].

  ``index_offset`` is the global index of row 0 (for batched runs).
  """
  sched = respaced_schedule(num_steps)
  batch = latents.shape[0]
  sample_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      index_offset + jnp.arange(batch))
  xs = {name: jnp.asarray(v, jnp.float32 if name != "t" else jnp.int32)
        for name, v in sched.items()}
  xs["k"] = jnp.arange(num_steps)

  def body(x, s):
    eps_hat = eps_fn(params, x, jnp.full((batch,), s["t"], jnp.int32))
    if sampler == "ddim":
      x0 = _x0(eps_hat, x, s["abar"])
      return schedules.ddim_step(x, x0, s["abar"], s["abar_prev"]), None
    x0 = _x0(eps_hat, x, s["abar"])
    x0 = jnp.clip(x0, -1.0, 1.0)
    coef0 = jnp.sqrt(s["abar_prev"]) * s["beta"] / (1.0 - s["abar"])
    coeft = jnp.sqrt(1.0 - s["beta"]) * (1.0 - s["abar_prev"]) / (1.0 - s["abar"])
    var = s["beta"] * (1.0 - s["abar_prev"]) / (1.0 - s["abar"])
    z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, s["k"]), x.shape[1:]))(
        sample_keys)
    return coef0 * x0 + coeft * x + jnp.sqrt(var) * z, None

  if sampler not in SAMPLERS:
    raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {sampler!r}")
  x, _ = jax.lax.scan(body, latents, xs)
  return x
