"""The DDIM sampling loop (docs/method.md §2): one compiled function per distinct step shape, timed
per step.

Every step's plan (masks, budgets) is prepared once per run before the loop (`prepare`, a
`Prepared` that every batch of the run reuses). Each step runs
``x̂_0 = apply(stats, plan, x_t, key_j)`` and the η = 0 DDIM update fused in one jitted function.
The function is compiled ahead of the timed call (compile seconds are reported separately; a
second run with the same shapes reuses the compiled executable), and each step's seconds are
measured with the device work finished.
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

from golddiff_jax import schedules, sharding, stats as stats_lib
from golddiff_jax.denoisers import METHODS
from golddiff_jax.sparsity import x0_threshold as x0_sparsity
from golddiff_jax.stats import Stats


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Result of `sample` (host NumPy arrays).

  Attributes:
    images: [B, H, W, C] the x̂_0 predicted at the last step (unclipped).
    x0_trajectory: [S, B, H, W, C] the x̂_0 predicted at every step.
    timesteps: [S] DDPM timesteps, e.g. 900, 800, …, 0.
    step_seconds: [S] wall seconds of each step with the device work finished, compile excluded.
    compile_seconds: [S] seconds spent compiling before each step (0 when cached).
    step_bytes: [S] XLA's memory estimate of each compiled step: arguments (database, statistics,
      masks, latents) + outputs + temporaries, in bytes (-1 where the backend does not report it).
    prepare_seconds: wall seconds of the preparation (placing the data, building every step's
      mask and plan) when this call made it, finished on the device; not in step_seconds. 0 when
      the plans came prepared (`golddiff_jax.prepare`: see `Prepared.prepare_seconds`).
  """
  images: np.ndarray
  x0_trajectory: np.ndarray
  timesteps: np.ndarray
  step_seconds: np.ndarray
  compile_seconds: np.ndarray
  step_bytes: np.ndarray
  prepare_seconds: float = 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
  """A run's plans, built once by `golddiff_jax.prepare` and reused by every batch's `sample`
  (and by `denoise` at one of its timesteps).

  Attributes:
    method: the denoiser's name.
    options: its resolved options (defaults filled in, validated).
    batch: the batch size the plans were built for: some plans depend on it (e.g. GoldDiff's
      chunk sizes), so latents must have exactly this many rows.
    timesteps: [S] the DDPM timesteps the plans serve, e.g. 900, 800, …, 0.
    stats: the statistics, sharded over ``mesh`` when there is one.
    plans: S per-step plans (masks, budgets, proxy database), placed on ``mesh``.
    mesh: the device mesh, or None for one device.
    prepare_seconds: wall seconds of building and placing the plans, finished on the device.
  """
  method: str
  options: Any
  batch: int
  timesteps: np.ndarray
  stats: Stats
  plans: tuple
  mesh: Any
  prepare_seconds: float

  @property
  def num_steps(self) -> int:
    return len(self.timesteps)


def memory_bytes(compiled) -> int:
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend implements the analysis.
    return -1


def _apply(stats: Stats, plan, x_t: jax.Array, key: jax.Array, method: str, mesh):
  module = METHODS[method]
  if mesh is None:
    return module.apply(stats, plan, x_t, key)
  return module.apply_sharded(stats, plan, x_t, key, mesh)


@functools.partial(jax.jit, static_argnames=("method", "mesh", "x0_threshold"))
def _step(stats: Stats, plan, x_t: jax.Array, abar_prev: jax.Array, key: jax.Array, *,
          method: str, mesh=None, x0_threshold=None):
  # The training-free sparse variant, for every method in one place (sparsity/x0_threshold.py).
  x0 = x0_sparsity.apply(stats, _apply(stats, plan, x_t, key, method, mesh), plan.abar,
                         x0_threshold)
  return schedules.ddim_step(x_t, x0, plan.abar, abar_prev), x0


@functools.partial(jax.jit, static_argnames=("method", "mesh"))
def _denoise(stats: Stats, plan, x_t: jax.Array, key: jax.Array, *, method: str, mesh=None):
  return _apply(stats, plan, x_t, key, method, mesh)


def _place_plans(stats: Stats, method: str, timesteps, options: dict, batch: int, mesh):
  """Shards the stats and prepares the run's plans, placed on ``mesh`` (no mesh: as built)."""
  if mesh is None:
    return stats, prepare_plans(stats, method, timesteps, options, batch)
  stats = stats_lib.shard(stats, mesh)
  plans = prepare_plans(stats, method, timesteps, options, batch)
  specs = METHODS[method].plan_specs
  plans = [jax.device_put(plan, jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                                             specs(plan), is_leaf=lambda v: isinstance(v, P)))
           for plan in plans]
  return stats, plans


def _place_queries(x: jax.Array, mesh) -> jax.Array:
  return x if mesh is None else jax.device_put(x, NamedSharding(mesh, sharding.batch_spec(mesh)))


def _to_host(x: jax.Array) -> np.ndarray:
  """The whole array on this host (all-gathered when other processes hold parts of it)."""
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def prepare_plans(stats: Stats, method: str, timesteps, options: dict, batch: int) -> list:
  """Host-side per-step plans for a whole run (e.g. the locality masks), built once.

  The registered method's ``prepare_run`` (`golddiff_jax.denoisers.base`) builds them, sharing
  work across the steps of a run (e.g. a proxy database).
  """
  abars = [schedules.alpha_bar(t) for t in timesteps]
  return list(METHODS[method].prepare_run(stats, abars, options, batch))


def step_keys(key: jax.Array, step: int) -> jax.Array:
  """fold_in(key, step) for one key, or for each of per-sample keys [B]."""
  if key.ndim == 1:
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(key)
  return jax.random.fold_in(key, step)


def prepare(stats: Stats, method: str, options: dict, timesteps, batch: int,
            mesh=None) -> Prepared:
  """Builds and places the plans for ``timesteps`` at batch size ``batch`` (arguments already
  validated by `golddiff_jax.prepare`), timed with the device work finished."""
  start = time.perf_counter()
  stats, plans = _place_plans(stats, method, timesteps, options, batch, mesh)
  # Dispatch is asynchronous: without this the first step would be charged for every mask.
  jax.block_until_ready((stats, plans))
  return Prepared(method=method, options=options, batch=int(batch),
                  timesteps=np.asarray(timesteps), stats=stats, plans=tuple(plans), mesh=mesh,
                  prepare_seconds=time.perf_counter() - start)


def denoise_flat(prepared: Prepared, x_t: jax.Array, t: int, key: jax.Array) -> jax.Array:
  """One x̂_0 prediction for flattened x_t [B, D] at timestep t (one of ``prepared.timesteps``)
  with that step's plan (sharded over ``prepared.mesh``)."""
  plan = prepared.plans[int(np.flatnonzero(prepared.timesteps == t)[0])]
  return _denoise(prepared.stats, plan, _place_queries(x_t, prepared.mesh), key,
                  method=prepared.method, mesh=prepared.mesh)


def sample_flat(prepared: Prepared, latents: jax.Array, key: jax.Array, on_step=None,
                x0_threshold: x0_sparsity.Threshold | None = None,
                prepare_seconds: float = 0.0) -> SampleOutput:
  """Runs the sampler on flattened latents [B, D] with a run's plans; see `golddiff_jax.sample`.
  ``x0_threshold`` soft-thresholds every step's x̂_0 (`golddiff_jax.sparsity.x0_threshold`);
  ``prepare_seconds`` is reported in the output (the caller's preparation, if any)."""
  timesteps, method, mesh = prepared.timesteps, prepared.method, prepared.mesh
  stats = prepared.stats
  num_steps, batch = len(timesteps), latents.shape[0]
  x = _place_queries(latents, mesh)
  trajectory, step_seconds, compile_seconds, step_bytes = [], [], [], []
  for j, (t, plan) in enumerate(zip(timesteps, prepared.plans)):
    abar_prev = jnp.float32(schedules.alpha_bar_prev(int(t), num_steps))
    step_key = step_keys(key, j)
    args = (stats, plan, x, abar_prev, step_key)
    start = time.perf_counter()
    compiled = _step.lower(*args, method=method, mesh=mesh,
                           x0_threshold=x0_threshold).compile()
    compile_seconds.append(time.perf_counter() - start)
    step_bytes.append(memory_bytes(compiled))
    start = time.perf_counter()
    x, x0 = compiled(*args)
    x0.block_until_ready()
    step_seconds.append(time.perf_counter() - start)
    trajectory.append(x0)
    if on_step is not None:
      on_step(j)
  h, w, c = stats.image_shape
  traj = _to_host(jnp.stack(trajectory)).reshape(num_steps, batch, h, w, c)
  return SampleOutput(images=traj[-1], x0_trajectory=traj, timesteps=np.asarray(timesteps),
                      step_seconds=np.asarray(step_seconds),
                      compile_seconds=np.asarray(compile_seconds),
                      step_bytes=np.asarray(step_bytes, np.int64),
                      prepare_seconds=float(prepare_seconds))
