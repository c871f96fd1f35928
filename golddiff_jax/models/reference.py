"""The trained reference network as a denoiser: load it, predict x̂_0, sample with DDIM
(docs/method.md §8.1).

    model = load_reference("workdir/reference_default", image_shape=(32, 32, 3))
    x0 = predict_x0(model, x_t, t=500)          # (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t, unclipped
    out = sample(model, latents, num_steps=10)  # a golddiff_jax.sampler.SampleOutput

Sampling uses the analytical sampler's schedule and update (`golddiff_jax.schedules`: "leading"
timesteps, ᾱ_prev(0) = 1, η = 0 DDIM with the clip inside the step), so method and reference
trajectories differ only by their denoiser. The step is one jitted function with t and ᾱ traced,
compiled once per network and latent shape and cached for the process. The batch is sharded over every device when it divides evenly,
otherwise every device holds all of it; the weights are replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from golddiff_jax import schedules, sharding
from golddiff_jax.models import checkpoint as ckpt
from golddiff_jax.models.unet import UNet
from golddiff_jax.sampler import SampleOutput, memory_bytes


@dataclasses.dataclass(frozen=True)
class ReferenceModel:
  """A trained U-Net: ``arch`` (the `UNet` fields), ``image_shape`` (H, W, C), ``params`` (the
  EMA weights) and the training ``step`` they come from."""
  arch: dict
  image_shape: tuple[int, int, int]
  params: Any
  step: int

  @property
  def module(self) -> UNet:
    return UNet(**self.arch)


def _shape_text(shape) -> str:
  return "×".join(str(int(s)) for s in shape)


def load_reference(checkpoint_dir: str, *, image_shape=None) -> ReferenceModel:
  """Restores the EMA weights of the latest checkpoint in a training workdir (or its
  ``checkpoints/`` folder).

  Raises ValueError when there is no readable checkpoint, or when ``image_shape`` (H, W, C) is
  given and differs from the shape the network was trained on.
  """
  manager, step, meta = ckpt.latest(checkpoint_dir)
  trained = tuple(meta["image_shape"])
  if image_shape is not None and tuple(int(s) for s in image_shape) != trained:
    raise ValueError(
        f"the reference network in {checkpoint_dir!r} was trained on {_shape_text(trained)} "
        f"images (H×W×C) but {_shape_text(image_shape)} was asked for: wrong resolution or "
        f"channels; train a reference for this dataset (configs/train/<dataset>.py)")
  replicated = NamedSharding(sharding.make_mesh(), P())
  shapes = _param_shapes(UNet(**meta["arch"]), trained)
  try:
    params = ckpt.restore(manager, step, {"ema_params": ckpt.abstract(shapes, replicated)})
  except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged folders.
    raise ValueError(f"checkpoint {ckpt.resolve_dir(checkpoint_dir)}/{step} is unreadable or "
                     f"does not match its arch metadata: {e}") from e
  finally:
    manager.close()
  return ReferenceModel(arch=meta["arch"], image_shape=trained, params=params["ema_params"],
                        step=int(step))


def _param_shapes(module: UNet, image_shape) -> Any:
  return jax.eval_shape(lambda: module.init(
      {"params": jax.random.key(0)}, jnp.zeros((1, *image_shape), jnp.float32),
      jnp.zeros((1,), jnp.int32), train=False)["params"])


def _x0(module: UNet, params, x_t: jax.Array, t: jax.Array, abar_t: jax.Array) -> jax.Array:
  eps = module.apply({"params": params}, x_t, jnp.full(x_t.shape[:1], t, jnp.int32), train=False)
  return (x_t - jnp.sqrt(1.0 - abar_t) * eps) / jnp.sqrt(abar_t)


_predict = jax.jit(_x0, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _step(module: UNet, params, x_t: jax.Array, t: jax.Array, abar_t: jax.Array,
          abar_prev: jax.Array):
  x0 = _x0(module, params, x_t, t, abar_t)
  return schedules.ddim_step(x_t, x0, abar_t, abar_prev), x0


@functools.lru_cache(maxsize=8)
def _compiled_step(module: UNet, batch_shape: tuple, sharded: bool):
  """`_step` compiled for one network and latent shape, cached: every step of every batch of
  a run shares one executable."""
  mesh = sharding.make_mesh()
  replicated = NamedSharding(mesh, P())
  params = ckpt.abstract(_param_shapes(module, batch_shape[1:]), replicated)
  x = jax.ShapeDtypeStruct(batch_shape, jnp.float32,
                           sharding=NamedSharding(mesh, P("data") if sharded else P()))
  scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype, sharding=replicated)  # noqa: E731
  return _step.lower(module, params, x, scalar(jnp.int32), scalar(jnp.float32),
                     scalar(jnp.float32)).compile()


def _check(model: ReferenceModel, x: Any, name: str) -> None:
  if not isinstance(model, ReferenceModel):
    raise ValueError(f"model must be a ReferenceModel (see load_reference), got "
                     f"{type(model).__name__}")
  shape = tuple(np.shape(x))
  if len(shape) != 4 or shape[1:] != tuple(model.image_shape) or shape[0] < 1:
    raise ValueError(f"{name} must have shape [B, {', '.join(map(str, model.image_shape))}] "
                     f"(the reference's image shape); got {list(shape)}")


def _place(model: ReferenceModel, x) -> tuple[Any, jax.Array]:
  """Weights replicated on every device; the batch sharded when it divides evenly."""
  mesh = sharding.make_mesh()
  spec = P("data") if np.shape(x)[0] % mesh.size == 0 else P()
  params = jax.device_put(model.params, NamedSharding(mesh, P()))
  return params, jax.device_put(jnp.asarray(x, jnp.float32), NamedSharding(mesh, spec))


def predict_x0(model: ReferenceModel, x_t, t: int) -> jax.Array:
  """x̂_0 = (x_t − √(1−ᾱ_t)·ε̂(x_t, t)) / √ᾱ_t for x_t [B, H, W, C] at DDPM timestep t (no clip)."""
  _check(model, x_t, "x_t")
  if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < 1000:
    raise ValueError(f"t must be an int in [0, 999], got {t!r}")
  params, x = _place(model, x_t)
  return _predict(model.module, params, x, jnp.int32(t), jnp.float32(schedules.alpha_bar(t)))


def sample(model: ReferenceModel, latents, num_steps: int = 10) -> SampleOutput:
  """DDIM sampling from ``latents`` [B, H, W, C] (the same schedule and step as
  `golddiff_jax.sample`); returns x̂_0 per step, timings and the compiled step's memory."""
  _check(model, latents, "latents")
  timesteps = schedules.ddim_timesteps(num_steps)
  params, x = _place(model, latents)
  module = model.module
  replicated = NamedSharding(sharding.make_mesh(), P())

  def scalars(t):  # t, ᾱ_t, ᾱ_prev: traced, so one executable serves every step
    return jax.device_put((jnp.int32(t), jnp.float32(schedules.alpha_bar(t)),
                           jnp.float32(schedules.alpha_bar_prev(t, num_steps))), replicated)

  begin = time.perf_counter()
  compiled = _compiled_step(module, tuple(x.shape), x.sharding.spec == P("data"))
  compile_seconds = [time.perf_counter() - begin] + [0.0] * (num_steps - 1)
  step_bytes = [memory_bytes(compiled)] * num_steps
  trajectory, step_seconds = [], []
  for t in timesteps:
    step_scalars = scalars(t)
    jax.block_until_ready(step_scalars)
    begin = time.perf_counter()
    x, x0 = compiled(params, x, *step_scalars)
    x0.block_until_ready()
    step_seconds.append(time.perf_counter() - begin)
    trajectory.append(x0)
  traj = np.asarray(jax.device_get(jnp.stack(trajectory)))
  return SampleOutput(images=traj[-1], x0_trajectory=traj, timesteps=np.asarray(timesteps),
                      step_seconds=np.asarray(step_seconds),
                      compile_seconds=np.asarray(compile_seconds),
                      step_bytes=np.asarray(step_bytes, np.int64))
