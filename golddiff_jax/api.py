"""The public API: ``fit``, ``denoise``, ``sample``, ``noise``. Inputs are validated here, at the
boundary; everything below is pure jitted code.

Images are NHWC float arrays in [-1, 1]; ``t`` counts DDPM steps 0…999.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import sampler, schedules, sharding, stats as stats_lib, validation
from golddiff_jax.denoisers import METHODS

fit = stats_lib.fit
shard_stats = stats_lib.shard
make_mesh = sharding.make_mesh


def _resolve(method: str, options: dict) -> tuple[Any, dict]:
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid methods: {sorted(METHODS)}")
  module = METHODS[method]
  validation.check_options(options, module.OPTIONS, what=f"method {method!r}")
  resolved = {**module.OPTIONS, **options}
  if "temperature" in resolved:
    temp = resolved["temperature"]
    if not isinstance(temp, (int, float)) or not np.isfinite(temp) or temp <= 0:
      raise ValueError(f"temperature must be a positive number, got {temp!r}")
  chunk = resolved.get("chunk_size")
  if chunk is not None and (not isinstance(chunk, (int, np.integer)) or chunk < 1):
    raise ValueError(f"chunk_size must be a positive int or None, got {chunk!r}")
  if hasattr(module, "check_options"):
    module.check_options(resolved)
  return module, resolved


def _check_stats(stats) -> None:
  if not isinstance(stats, stats_lib.Stats):
    raise ValueError(f"stats must be a golddiff_jax Stats (from gd.fit), got {type(stats).__name__}")


def _flatten(stats: stats_lib.Stats, arr: Any, name: str) -> jax.Array:
  checked = validation.check_images(arr, name=name, value_range=None)
  if tuple(checked.shape[1:]) != tuple(stats.image_shape):
    raise ValueError(f"{name} has image shape {tuple(checked.shape[1:])} but the stats were fit "
                     f"on {tuple(stats.image_shape)}")
  return jnp.asarray(checked.reshape(checked.shape[0], -1))


def _key(key) -> jax.Array:
  return jax.random.key(0) if key is None else key


def _mesh(stats: stats_lib.Stats, mesh, module, options: dict, batch: int):
  """The mesh to run on: ``mesh``, else the one the stats are sharded on, else None."""
  mesh = stats.mesh if mesh is None else mesh
  if mesh is None:
    return None
  sharding.check_mesh(mesh)
  if hasattr(module, "check_mesh_options"):
    module.check_mesh_options(options)
  shards = sharding.batch_size(mesh)
  if batch % shards:
    raise ValueError(f"batch of {batch} does not divide over the mesh's {shards} "
                     f"{sharding.BATCH!r} devices")
  return mesh


def denoise(stats: stats_lib.Stats, x_t: Any, t: int, *, method: str, key=None, mesh=None,
            **options) -> jax.Array:
  """Predicts x̂_0 [B, H, W, C] from the noisy images ``x_t`` at DDPM timestep ``t``.

  With ``mesh`` (a `jax.sharding.Mesh` with a ``data`` axis and optionally a ``batch`` axis, e.g.
  from `golddiff_jax.sharding.make_mesh`) the database is sharded along N over ``data`` and the
  batch over ``batch``; the result is the same as on one device.
  """
  _check_stats(stats)
  module, resolved = _resolve(method, options)
  if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not (
      0 <= t < schedules.NUM_TRAIN_TIMESTEPS):
    raise ValueError(f"t must be an int in [0, {schedules.NUM_TRAIN_TIMESTEPS - 1}], got {t!r}")
  flat = _flatten(stats, x_t, "x_t")
  mesh = _mesh(stats, mesh, module, resolved, flat.shape[0])
  x0 = sampler.denoise_flat(stats, flat, int(t), method, _key(key), resolved, mesh)
  return x0.reshape(flat.shape[0], *stats.image_shape)


def sample(stats: stats_lib.Stats, latents: Any, *, method: str, num_steps: int = 10,
           key=None, mesh=None, **options) -> sampler.SampleOutput:
  """Runs deterministic DDIM (η = 0) from ``latents`` [B, H, W, C] with an analytical denoiser.

  Returns a `SampleOutput` with ``images`` (x̂_0 at the last step), ``x0_trajectory``,
  ``timesteps``, ``step_seconds``, ``compile_seconds`` and ``prepare_seconds``. ``mesh``: as in
  `denoise` (stats already sharded with `shard_stats` or ``fit(..., mesh=)`` run on their own mesh
  by default).
  """
  _check_stats(stats)
  module, resolved = _resolve(method, options)
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  schedules.ddim_timesteps(int(num_steps))  # range check
  flat = _flatten(stats, latents, "latents")
  mesh = _mesh(stats, mesh, module, resolved, flat.shape[0])
  return sampler.sample_flat(stats, flat, method, int(num_steps), _key(key), resolved, mesh)


def noise(key: jax.Array, batch: int, image_shape) -> jax.Array:
  """Initial latents x_T ~ N(0, I) of shape [batch, H, W, C] (its own PRNG stream: pass a key
  that is not reused for the sampler's randomness)."""
  if int(batch) < 1:
    raise ValueError(f"batch must be >= 1, got {batch}")
  return jax.random.normal(key, (int(batch), *tuple(image_shape)), jnp.float32)
