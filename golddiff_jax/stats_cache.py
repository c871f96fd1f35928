"""The runs' statistics cache: where it lives, what each file was fitted from, when it is reused.

A run's statistics are a pure function of its ``data`` section and ``stats.source`` (and
``stats.global_subset_size``), so one cache can serve every workdir. By default it lives beside
the data, in ``<data.data_dir>/golddiff_stats`` (the TFDS data folder: ``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets`` when ``data.data_dir`` is None); ``stats.cache_dir`` overrides it.

A cached file is reused only when it was saved with the same source description
(`run_config.stats_source`), holds the expected number of images when that is known without
loading data, and its arrays are finite; otherwise it is refitted and replaced (a warning says
why). Temp files that a killed writer left behind are removed once they are older than
`ORPHAN_SECONDS`.
"""

from __future__ import annotations

import glob
import logging
import os
import time

import jax

from golddiff_jax import run_config, stats as stats_lib
from golddiff_jax import data as data_lib

log = logging.getLogger("golddiff_jax.run")

ORPHAN_SECONDS = 600  # a live writer touches its temp file far more often than this


def directory(config) -> str:
  """The cache folder of ``config`` (``stats.cache_dir``, else beside the data)."""
  if config.stats.get("cache_dir"):
    return os.path.abspath(os.path.expanduser(config.stats.cache_dir))
  data_dir = config.data.get("data_dir") or os.environ.get(
      "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))  # TFDS's own default
  return os.path.abspath(os.path.join(os.path.expanduser(data_dir), "golddiff_stats"))


def remove_orphans(folder: str, max_age: float = ORPHAN_SECONDS) -> list[str]:
  """Deletes temp files (``.*.tmp``, see `golddiff_jax.atomic`) older than ``max_age`` seconds
  in ``folder``; returns their paths."""
  removed = []
  now = time.time()
  for path in glob.glob(os.path.join(folder, ".*.tmp")):
    try:
      if now - os.path.getmtime(path) > max_age:
        os.remove(path)
        removed.append(path)
    except OSError:  # another process removed or renamed it meanwhile
      continue
  return removed


def fit(config, mesh) -> stats_lib.Stats:
  """Loads the data ``config`` describes and fits its statistics (sharded over ``mesh``)."""
  chunk = config.stats.chunk_size
  if (mesh is not None and jax.process_count() > 1 and config.stats.source == "database"
      and config.data.class_id is None):
    # Multi-host: each process keeps its own slice; statistics are reduced across processes.
    local = data_lib.load_images(config.data, gather=False)
    log.info("loaded %d local images of shape %s", local.images.shape[0],
             local.images.shape[1:])
    return stats_lib.fit_process_local(local.images, mesh=mesh, chunk_size=chunk)
  loaded = data_lib.load_images(config.data)
  log.info("loaded %d images of shape %s", loaded.images.shape[0], loaded.images.shape[1:])
  if config.stats.source == "database":
    return stats_lib.fit(loaded.images, chunk_size=chunk, mesh=mesh)
  # Global statistics: the database is this selection, μ, λ, V are the whole split's.
  everything = config.data.copy_and_resolve_references()
  with everything.unlocked():
    everything.class_id = None
    everything.subset_size = config.stats.global_subset_size
  overall = stats_lib.fit(data_lib.load_images(
      everything, subset_name="stats.global_subset_size").images, chunk_size=chunk)
  n = loaded.images.shape[0]
  return stats_lib.from_arrays(loaded.images.reshape(n, -1), overall.mean, overall.eigvals,
                               overall.eigvecs, overall.image_shape, mesh=mesh)


def fit_or_load(config, mesh=None, folder: str | None = None) -> tuple[stats_lib.Stats, dict]:
  """The run's statistics from the cache when it holds a valid file for them, else fitted (and
  cached; a cache that cannot be written costs a warning, not the run). ``folder`` overrides
  `directory`. Returns the stats and ``{"stats_path", "stats_cached"[, "fit_seconds"]}``."""
  folder = folder or directory(config)
  path = os.path.join(folder, run_config.stats_key(config))
  info = {"stats_path": path, "stats_cached": False}
  for orphan in remove_orphans(folder):
    log.info("removed a stale temp file %s", orphan)
  if os.path.exists(path):
    try:
      stats = stats_lib.load(path, mesh=mesh, source=run_config.stats_source(config),
                             num_images=run_config.database_size(config))
      if tuple(stats.image_shape) != run_config.image_shape(config):
        raise ValueError(f"{path} has image shape {stats.image_shape}, expected "
                         f"{run_config.image_shape(config)}")
      log.info("reusing cached statistics %s (N=%d)", path, stats.num_images)
      return stats, {**info, "stats_cached": True}
    except ValueError as e:
      log.warning("not reusing the cached statistics: %s; refitting", e)
  start = time.perf_counter()
  stats = fit(config, mesh)
  info["fit_seconds"] = time.perf_counter() - start
  if jax.process_index() == 0:
    try:
      stats_lib.save(stats, path, source=run_config.stats_source(config))
    except OSError as e:
      log.warning("could not cache the statistics in %s: %s", path, e.strerror or e)
  return stats, info


def for_experiment(config, output_dir: str, mesh=None) -> tuple[stats_lib.Stats, dict]:
  """`fit_or_load` for an experiment script: cached in ``stats.cache_dir`` when set, else in
  ``<output_dir>/stats`` (the launcher uses the shared cache, `directory`)."""
  folder = None if config.stats.get("cache_dir") else os.path.join(output_dir, "stats")
  return fit_or_load(config, mesh, folder)
