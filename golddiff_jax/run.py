"""One experiment run: ``run(config, workdir)`` (library code; never reads flags, notebook-safe).

1. validate the config (`run_config.validate`), build the mesh, check that the workdir (and
   ``stats.cache_dir`` when set) can be written;
2. remove a previous run's results (``metrics.json`` first);
3. load the statistics from the shared cache (`golddiff_jax.stats_cache`: a file is reused only
   if it was fitted from the same data and is valid) or load the data and fit them;
4. sample ``num_samples`` images in batches (a progress bar over steps), initial noise and
   sampler randomness on separate streams of ``config.seed`` (sample i's randomness depends on
   i and the seed only);
5. write ``config.json`` (before sampling), ``samples.npz``, ``grid.png``, ``trajectory.png``,
   the plots of `golddiff_jax.plots` (``concentration.png``, ``budgets.png``,
   ``step_seconds.png``) and ``metrics.json`` (written last, with the config's fingerprint: a run
   is finished when it exists), and append to ``log.txt``.

This module only orchestrates; each concern has its own module: the mesh (`mesh_policy`), the
workdir and its log (`workdirs`), the statistics cache (`stats_cache`), the batch loop with the
run's plans built once (`batches`), the progress bar (`progress`), files and figures (`outputs`,
`plots`).

Every file is written atomically. Bad input raises ValueError: a bad config or workdir before
anything is written, a data problem (e.g. a missing manual-download folder) before any result is;
a filesystem error (full disk) is a ValueError too. ``log.txt`` records the error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import jax
import numpy as np

import golddiff_jax as gd
from golddiff_jax import batches, budgets, diagnostics, memory, outputs, plots, progress, run_config
from golddiff_jax import schedules
from golddiff_jax import stats_cache
from golddiff_jax.denoisers import golddiff
from golddiff_jax.mesh_policy import run_mesh
from golddiff_jax.workdirs import clear_results, ensure_workdir, log_to

# The run's own messages: INFO and up reach log.txt (and stderr under absl) even when the
# library is used without absl's app, whose flags set the default verbosity.
log = logging.getLogger("golddiff_jax.run")
log.setLevel(logging.INFO)


def _sample(config, stats, options: dict, mesh) -> tuple[batches.Batches, np.ndarray]:
  """All batches (`golddiff_jax.batches`, plans once per run) under a progress bar; returns them
  and the initial latents.

  The initial noise and the sampler's randomness use separate streams of ``config.seed``; sample
  i's sampler key is ``fold_in(sampler stream, i)`` (`golddiff_jax.sample_keys`), so a sample
  does not depend on ``sampler.batch_size``.
  """
  noise_key, sample_key = jax.random.split(jax.random.key(config.seed))
  num, steps = config.sampler.num_samples, config.sampler.num_steps
  batch = min(config.sampler.batch_size, num)
  latents = np.asarray(gd.noise(noise_key, num, stats.image_shape))
  with progress.bar(len(batches.spans(num, batch)) * steps, f"sampling {config.method}") as bar:

    def on_batch(b, out):
      bar.set_postfix(batch=f"{b + 1}", step_s=f"{np.median(out.step_seconds):.3f}")
      log.info("batch %d: step seconds %s, compile seconds %.2f", b,
               np.round(out.step_seconds, 4).tolist(), float(out.compile_seconds.sum()))

    result = batches.sample_method(stats, latents, method=config.method, num_steps=steps,
                                   batch=batch, key=sample_key, mesh=mesh,
                                   on_step=lambda _: bar.update(1), on_batch=on_batch, **options)
  log.info("plans: %.2f s (once per run)", result.prepare_seconds)
  return result, latents


def _support(config, options: dict, stats, latents, result: batches.Batches) -> dict | None:
  """Posterior support sizes along the first samples' trajectories (`diagnostics`); None when
  ``diagnostics.num_samples`` is 0 or the measurement fails (it never fails the run)."""
  n = min(config.diagnostics.num_samples, latents.shape[0])
  if n == 0:
    return None
  try:
    return diagnostics.trajectory_support(
        stats, latents[:n], result.x0_trajectory[:, :n], result.timesteps,
        mass=float(config.diagnostics.mass),
        temperature=float(options.get("temperature", 1.0)))
  except (TypeError, ValueError) as e:
    log.warning("posterior support diagnostics skipped: %s", e)
    return None


def _budgets(config, options: dict, num_images: int, timesteps) -> list[dict] | None:
  """GoldDiff's per-step pool and subset sizes (m_t, k_t) from the run's resolved options (the
  config's fields may be None: the method's defaults), and whether the step used the high-noise
  expansion instead of retrieval."""
  if config.method != "golddiff":
    return None
  abars = [schedules.alpha_bar(int(t)) for t in timesteps]
  bounds = budgets.resolve_budgets(num_images, options["k_min"], options["k_max"])
  sizes = budgets.schedule(bounds, abars,
                           **{k: options[k] for k in ("dynamic_m", "dynamic_k", "static_m",
                                                      "static_k")})
  expand = golddiff.expansion_steps(gd.METHODS["golddiff"].options(options), abars, sizes,
                                    num_images)
  return [{"t": int(t), "m": m, "k": k, "expansion": e}
          for t, (m, k), e in zip(timesteps, sizes, expand)]


def _write_results(config, workdir, stats, result, latents) -> None:
  outputs.write_npz(os.path.join(workdir, "samples.npz"), images=result.images,
                    x0_trajectory=result.x0_trajectory, timesteps=result.timesteps,
                    latents=latents)
  data_points = np.asarray(stats.images[:2000]) if stats.image_shape[:2] == (1, 1) else None
  outputs.write_png(os.path.join(workdir, "grid.png"), outputs.sample_grid(
      result.images[:config.output.grid_samples], data_points))
  plots.write_figure(os.path.join(workdir, "trajectory.png"), plots.trajectory_figure(
      result.x0_trajectory, result.timesteps, config.output.trajectory_samples, data_points))


def run(config, workdir: str) -> dict:
  """Runs one experiment into ``workdir`` and returns its metrics (see the module docstring).

  Raises ValueError for bad input and for filesystem errors (a full disk, a folder that cannot
  be written); both are recorded in ``log.txt`` when it can still be written.
  """
  run_config.validate(config)
  mesh = run_mesh(config)  # before the workdir: a mesh the devices cannot hold is bad input
  if config.stats.get("cache_dir"):  # checked now, not after the fit
    ensure_workdir(stats_cache.directory(config), "stats.cache_dir")
  workdir = ensure_workdir(workdir)
  is_main = jax.process_index() == 0
  log_file = log_to(os.path.join(workdir, "log.txt")) if is_main else contextlib.nullcontext()
  with log_file as handler:
    try:
      try:
        return _run(config, workdir, is_main, mesh)
      except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise ValueError(f"filesystem error: {e.strerror or e}{where}") from e
    except ValueError as e:  # recorded in the log file only; the caller reports it
      if handler is not None:
        handler.handle(logging.makeLogRecord(
            {"msg": f"run failed: {e}", "levelno": logging.ERROR, "levelname": "ERROR"}))
      raise


def _run(config, workdir: str, is_main: bool, mesh) -> dict:
  started = memory.start()
  options = run_config.method_options(config)
  log.info("run: method=%s dataset=%s workdir=%s", config.method, config.data.dataset,
               workdir)
  log.info("mesh: %s", "none (one device)" if mesh is None else dict(mesh.shape))
  if is_main:  # a previous run's results must not pass for this run's
    clear_results(workdir)
  start = time.perf_counter()
  stats, info = stats_cache.fit_or_load(config, mesh)  # the shared cache
  setup_seconds = time.perf_counter() - start
  log.info("statistics: N=%d image_shape=%s %s (%.2f s)", stats.num_images,
               stats.image_shape, info, setup_seconds)
  if is_main:
    outputs.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  result, latents = _sample(config, stats, options, mesh)
  metrics = {
      "config_fingerprint": run_config.fingerprint(config),
      "method": config.method, "options": options, "dataset": config.data.dataset,
      "num_images": stats.num_images, "image_shape": list(stats.image_shape),
      "num_samples": int(latents.shape[0]), "batch_size": result.batch_size,
      "num_batches": result.num_batches, "num_steps": result.num_steps,
      "timesteps": result.timesteps,
      "step_seconds": result.step_seconds, "compile_seconds": result.compile_seconds,
      "step_seconds_median": result.step_seconds_median,
      "compile_seconds_total": float(result.compile_seconds.sum()),
      "prepare_seconds": result.prepare_seconds,  # once per run: masks and plans
      "sampling_seconds": result.wall_seconds,
      "published_style_seconds_per_batch_step": result.published_style_seconds_per_batch_step,
      "setup_seconds": setup_seconds, **info,
      "peak_memory": memory.run_peak(started, result.step_bytes.ravel()),
      "golden_budgets": _budgets(config, options, stats.num_images, result.timesteps),
      "backend": jax.default_backend(), "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "mesh": None if mesh is None else {k: int(v) for k, v in mesh.shape.items()},
  }
  metrics["posterior_support"] = _support(config, options, stats, latents, result)
  if is_main:
    _write_results(config, workdir, stats, result, latents)
    plots.write_run_plots(workdir, metrics)
    outputs.write_json(os.path.join(workdir, "metrics.json"), metrics)
  log.info("done: median step %.4f s, compile %.2f s, sampling %.2f s; outputs in %s",
               metrics["step_seconds_median"], metrics["compile_seconds_total"],
               result.wall_seconds, workdir)
  return metrics
