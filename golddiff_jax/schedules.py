"""Noise schedule and the deterministic DDIM update (docs/method.md §2).

The schedule is computed in float32 NumPy on the host, in the published order of operations, so that
ᾱ_t matches diffusers' ``DDIMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear")``
to the last bit. The DDIM step is a pure jnp function.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def betas(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
  """Linear β_t in float32, t = 0…T−1."""
  return np.linspace(BETA_START, BETA_END, num_train_timesteps, dtype=np.float32)


def alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
  """ᾱ_t = ∏_{s≤t} (1 − β_s) as a float32 cumulative product (0-indexed)."""
  alphas = np.float32(1.0) - betas(num_train_timesteps)
  return np.cumprod(alphas, dtype=np.float32)


def ddim_timesteps(num_steps: int,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
  """"Leading" spacing: t_j = (S − 1 − j)·⌊T/S⌋, e.g. 10 steps → [900, 800, …, 0]."""
  if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool):
    raise ValueError(f"num_steps must be an int, got {num_steps!r}")
  if not 1 <= num_steps <= num_train_timesteps:
    raise ValueError(
        f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
  ratio = num_train_timesteps // num_steps
  return (np.arange(num_steps)[::-1] * ratio).astype(np.int64)


def alpha_bar(t: int) -> float:
  """ᾱ_t as a Python float holding the float32 value."""
  return float(alphas_cumprod()[int(t)])


def alpha_bar_prev(t: int, num_steps: int,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> float:
  """ᾱ at the previous (less noisy) timestep; 1.0 below t = 0 (``set_alpha_to_one``)."""
  prev_t = int(t) - num_train_timesteps // num_steps
  return float(alphas_cumprod(num_train_timesteps)[prev_t]) if prev_t >= 0 else 1.0


def ddim_step(x_t: jnp.ndarray, x0_hat: jnp.ndarray, abar_t, abar_prev) -> jnp.ndarray:
  """η = 0 DDIM update with clip_sample=True (docs/method.md §2.4).

  ε̂ is computed from the *unclipped* x̂_0; only the position term uses clip(x̂_0, −1, 1).
  """
  abar_t = jnp.asarray(abar_t, x_t.dtype)
  abar_prev = jnp.asarray(abar_prev, x_t.dtype)
  eps_hat = (x_t - jnp.sqrt(abar_t) * x0_hat) / jnp.sqrt(1.0 - abar_t)
  x0_pos = jnp.clip(x0_hat, -1.0, 1.0)
  return jnp.sqrt(abar_prev) * x0_pos + jnp.sqrt(1.0 - abar_prev) * eps_hat


def ddim_states(latents, x0_trajectory, timesteps) -> np.ndarray:
  """The noisy states x_t a DDIM run visited, [S, *latents.shape], rebuilt from its record.

  x_{t_0} = ``latents``; each next state is `ddim_step` with that step's recorded x̂_0
  (``x0_trajectory`` [S, *latents.shape]) and the "leading" ᾱ of ``len(timesteps)`` steps, as in
  the sampler. Used to evaluate diagnostics (e.g. the posterior at each step) after a run.
  """
  x0_trajectory = np.asarray(x0_trajectory, np.float32)
  x = jnp.asarray(latents, jnp.float32)
  if x0_trajectory.shape != (len(timesteps), *x.shape):
    raise ValueError(f"x0_trajectory has shape {x0_trajectory.shape}; expected "
                     f"{(len(timesteps), *x.shape)} for {len(timesteps)} timesteps")
  states = []
  for x0, t in zip(x0_trajectory, timesteps):
    states.append(np.asarray(x))
    x = ddim_step(x, jnp.asarray(x0), alpha_bar(int(t)), alpha_bar_prev(int(t), len(timesteps)))
  return np.stack(states)
