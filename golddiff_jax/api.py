"""The public API: ``fit``, ``prepare``, ``denoise``, ``sample``, ``noise``. Inputs are validated
here, at the boundary; everything below is pure jitted code.

Images are NHWC float arrays in [-1, 1]; ``t`` counts DDPM steps 0…999.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import sampler, schedules, sharding, stats as stats_lib, validation
from golddiff_jax.denoisers import base
from golddiff_jax.sparsity import x0_threshold as x0_sparsity

fit = stats_lib.fit
shard_stats = stats_lib.shard
make_mesh = sharding.make_mesh


def _plain(value: Any) -> Any:
  """NumPy/JAX scalars (``np.float32(0.5)``, ``jnp.int32(3)``, 0-d arrays) as Python scalars, so
  that every later check sees ``int``/``float``/``bool``; anything else unchanged."""
  if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
    return np.asarray(value).item()
  return value


def _resolve(method: str, options: dict) -> tuple[base.Denoiser, base.Options]:
  """The registered method and its checked options (NumPy/JAX scalars taken as Python ones)."""
  denoiser = base.get(method)
  return denoiser, denoiser.options({k: _plain(v) for k, v in options.items()})


def _check_stats(stats) -> None:
  if not isinstance(stats, stats_lib.Stats):
    raise ValueError(f"stats must be a golddiff_jax Stats (from gd.fit), got {type(stats).__name__}")


def _flatten(stats: stats_lib.Stats, arr: Any, name: str) -> jax.Array:
  checked = validation.check_images(arr, name=name, value_range=None)
  if tuple(checked.shape[1:]) != tuple(stats.image_shape):
    raise ValueError(f"{name} has image shape {tuple(checked.shape[1:])} but the stats were fit "
                     f"on {tuple(stats.image_shape)}")
  return jnp.asarray(checked.reshape(checked.shape[0], -1))


def _key(key, batch: int) -> jax.Array:
  """A typed PRNG key: one for the batch, or ``batch`` keys (one per sample, shape [B]); raw
  uint32 keys ([2] or [B, 2], from ``jax.random.PRNGKey``) are wrapped. None: key(0)."""
  if key is None:
    return jax.random.key(0)
  if isinstance(key, (jax.Array, np.ndarray)):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      if key.shape in ((), (batch,)):
        return key
    elif key.dtype == np.uint32 and key.shape in ((2,), (batch, 2)):
      return jax.random.wrap_key_data(jnp.asarray(key))
  what = (f"{type(key).__name__} {key!r}" if isinstance(key, (bool, numbers.Number, str))
          else f"{type(key).__name__} of shape {getattr(key, 'shape', '?')} and dtype "
               f"{getattr(key, 'dtype', '?')}")
  raise ValueError(f"key must be a PRNG key from jax.random.key(seed): one key, or one per "
                   f"sample (shape [{batch}]); got {what}")


def _timestep(t) -> int:
  """``t`` as an int in [0, 999] (Python, NumPy or 0-d JAX integers), else ValueError."""
  plain = _plain(t)
  if isinstance(plain, bool) or not isinstance(plain, numbers.Integral) or not (
      0 <= plain < schedules.NUM_TRAIN_TIMESTEPS):
    raise ValueError(f"t must be an int in [0, {schedules.NUM_TRAIN_TIMESTEPS - 1}], got {t!r}")
  return int(plain)


def _mesh(stats: stats_lib.Stats, mesh, denoiser: base.Denoiser, options: base.Options,
          batch: int):
  """The mesh to run on: ``mesh``, else the one the stats are sharded on, else None."""
  mesh = stats.mesh if mesh is None else mesh
  if mesh is None:
    return None
  sharding.check_mesh(mesh)
  denoiser.check_mesh_options(options)
  shards = sharding.batch_size(mesh)
  if batch % shards:
    raise ValueError(f"batch of {batch} does not divide over the mesh's {shards} "
                     f"{sharding.BATCH!r} devices")
  return mesh


def _num_steps(num_steps) -> int:
  num_steps = _plain(num_steps)
  if (isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral)
      or num_steps < 1):
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  schedules.ddim_timesteps(int(num_steps))  # range check
  return int(num_steps)


def _method(method) -> str:
  if method is None:
    raise ValueError("method is required (or pass the result of golddiff_jax.prepare instead of "
                     "the stats)")
  return method


def _one_call(stats, method, options: dict, arr: Any, name: str, key, mesh):
  """The checks of the one-call forms (statistics given): the stats, the method and its options,
  the inputs, the key and the mesh; returns (resolved options, flat inputs [B, D], key, mesh)."""
  _check_stats(stats)
  module, resolved = _resolve(_method(method), options)
  flat = _flatten(stats, arr, name)
  return resolved, flat, _key(key, flat.shape[0]), _mesh(stats, mesh, module, resolved,
                                                         flat.shape[0])


def _prepared_rows(prepared: sampler.Prepared, arr: Any, name: str, given: dict) -> jax.Array:
  """``arr`` flattened for ``prepared``'s plans; the settings the plans fixed must not be given
  again."""
  extra = sorted(k for k, v in given.items() if v is not None)
  if extra:
    raise ValueError(f"{', '.join(extra)}: already fixed by the prepared plans (method "
                     f"{prepared.method!r}); pass only the inputs, key and per-call settings")
  flat = _flatten(prepared.stats, arr, name)
  if flat.shape[0] != prepared.batch:
    raise ValueError(f"{name} has a batch of {flat.shape[0]} but the plans were prepared for "
                     f"batch={prepared.batch}; prepare once per batch size")
  return flat


def prepare(stats: stats_lib.Stats, *, method: str, batch: int, num_steps: int = 10, mesh=None,
            **options) -> sampler.Prepared:
  """Builds a run's plans once (every step's mask, budgets and GoldDiff's proxy database), for
  batches of ``batch`` rows; pass the result to `sample` (or `denoise`) for each batch.

  ``method``, ``num_steps``, ``mesh`` and ``**options`` are as in `sample`, validated here once;
  the `Prepared` result holds the resolved options, the timesteps, the plans and statistics placed
  on the mesh, and ``prepare_seconds``. Plans may depend on the batch size (chunk sizes), so a run
  whose last batch is smaller prepares that size too: the samples are then the same as from
  ``sample(stats, latents, ...)`` in one call per batch.
  """
  _check_stats(stats)
  module, resolved = _resolve(method, options)
  num_steps = _num_steps(num_steps)
  plain = _plain(batch)
  if isinstance(plain, bool) or not isinstance(plain, numbers.Integral) or plain < 1:
    raise ValueError(f"batch must be a positive int, got {batch!r}")
  mesh = _mesh(stats, mesh, module, resolved, int(plain))
  return sampler.prepare(stats, method, resolved, schedules.ddim_timesteps(num_steps), int(plain),
                         mesh)


def denoise(stats: stats_lib.Stats | sampler.Prepared, x_t: Any, t: int, *,
            method: str | None = None, key=None, mesh=None, **options) -> jax.Array:
  """Predicts x̂_0 [B, H, W, C] from the noisy images ``x_t`` at DDPM timestep ``t``.

  With ``mesh`` (a `jax.sharding.Mesh` with a ``data`` axis and optionally a ``batch`` axis, e.g.
  from `golddiff_jax.sharding.make_mesh`) the database is sharded along N over ``data`` and the
  batch over ``batch``; the result is the same as on one device. ``key`` drives the denoiser's
  randomness (GoldDiff's random pool): one `jax.random.key`, or one key per sample (shape [B]),
  which makes each sample's randomness independent of the batch it is in.

  ``stats`` may instead be a `Prepared` from `prepare` (then give no ``method``, ``mesh`` or
  options): ``t`` must be one of its timesteps, whose plan is reused (a run-wide plan, as
  `sample` uses it at that step: GoldDiff sizes its subsets for the whole run).
  """
  if isinstance(stats, sampler.Prepared):
    prepared = stats
    flat = _prepared_rows(prepared, x_t, "x_t", {"method": method, "mesh": mesh, **options})
    t = _timestep(t)
    if t not in prepared.timesteps:
      raise ValueError(f"t={t} is not one of the prepared timesteps "
                       f"{prepared.timesteps.tolist()}")
    x0 = sampler.denoise_flat(prepared, flat, t, _key(key, flat.shape[0]))
    return x0.reshape(flat.shape[0], *prepared.stats.image_shape)
  t, (resolved, flat, key, mesh) = _timestep(t), _one_call(stats, method, options, x_t, "x_t",
                                                           key, mesh)
  prepared = sampler.prepare(stats, method, resolved, [t], flat.shape[0], mesh)
  x0 = sampler.denoise_flat(prepared, flat, t, key)
  return x0.reshape(flat.shape[0], *stats.image_shape)


def sample(stats: stats_lib.Stats | sampler.Prepared, latents: Any, *, method: str | None = None,
           num_steps: int = 10, key=None, mesh=None,
           on_step: Callable[[int], None] | None = None, x0_threshold=None,
           **options) -> sampler.SampleOutput:
  """Runs deterministic DDIM (η = 0) from ``latents`` [B, H, W, C] with an analytical denoiser.

  Returns a `SampleOutput` with ``images`` (x̂_0 at the last step), ``x0_trajectory``,
  ``timesteps``, ``step_seconds``, ``compile_seconds`` and ``prepare_seconds``. ``mesh``: as in
  `denoise` (stats already sharded with `shard_stats` or ``fit(..., mesh=)`` run on their own
  mesh by default). ``key``: as in `denoise`; step j uses ``fold_in(key, j)`` (per sample for [B]
  keys).
  ``on_step(j)`` is called after step j has finished (e.g. to move a progress bar).
  ``x0_threshold``: a `golddiff_jax.sparsity.x0_threshold.Threshold` (e.g. ``Threshold(r=0.05,
  basis="pca")``) soft-thresholds every step's x̂_0, for any method (the training-free sparse
  variant); None leaves x̂_0 as the method made it.

  ``stats`` may instead be a `Prepared` from `prepare` (then give no ``method``, ``mesh`` or
  options; its own ``num_steps`` is used): its plans are reused, so a run with many batches
  builds them once; the output's ``prepare_seconds`` is then 0 (the time is
  ``Prepared.prepare_seconds``).
  """
  if isinstance(stats, sampler.Prepared):
    prepared = stats
    steps = None if num_steps in (10, prepared.num_steps) else num_steps  # 10: the default
    flat = _prepared_rows(prepared, latents, "latents",
                          {"method": method, "num_steps": steps, "mesh": mesh, **options})
    key = _key(key, flat.shape[0])
    _check_threshold(x0_threshold)
    return sampler.sample_flat(prepared, flat, key, on_step=on_step, x0_threshold=x0_threshold)
  resolved, flat, key, mesh = _one_call(stats, method, options, latents, "latents", key, mesh)
  num_steps = _num_steps(num_steps)
  _check_threshold(x0_threshold)
  prepared = sampler.prepare(stats, method, resolved, schedules.ddim_timesteps(num_steps),
                             flat.shape[0], mesh)
  return sampler.sample_flat(prepared, flat, key, on_step=on_step, x0_threshold=x0_threshold,
                             prepare_seconds=prepared.prepare_seconds)


def _check_threshold(x0_threshold) -> None:
  if x0_threshold is not None and not isinstance(x0_threshold, x0_sparsity.Threshold):
    raise ValueError(f"x0_threshold must be None or a sparsity.x0_threshold.Threshold, got "
                     f"{type(x0_threshold).__name__}")


def sample_keys(key: jax.Array, first: int, count: int) -> jax.Array:
  """Per-sample keys [count] ``fold_in(key, i)`` for the global sample indices i = first, …,
  first + count − 1: pass them as ``key`` to `sample` so that a sample's randomness depends on
  its index and ``key`` only, not on how the samples are split into batches."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.arange(int(first), int(first) + int(count), dtype=jnp.uint32))


def noise(key: jax.Array, batch: int, image_shape) -> jax.Array:
  """Initial latents x_T ~ N(0, I) of shape [batch, H, W, C] (its own PRNG stream: pass a key
  that is not reused for the sampler's randomness)."""
  if int(batch) < 1:
    raise ValueError(f"batch must be >= 1, got {batch}")
  return jax.random.normal(key, (int(batch), *tuple(image_shape)), jnp.float32)
