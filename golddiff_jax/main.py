"""Launcher: ``python -m golddiff_jax.main --config=configs/default.py --workdir=DIR``.

Flags → config → `golddiff_jax.run.run(config, workdir)`. Override any config field with
``--config.section.field=value`` and pass ``--jax_*`` flags (e.g. ``--jax_platforms=cpu``).
Bad input (config file, flags, field values, data folders, workdir) prints one ``error: ...``
line to stderr and exits with status 2, without a traceback. TensorFlow is imported (and told to
leave the GPUs to JAX) only when a run loads data, so a rerun from cached statistics skips it.
Compiled steps are cached in ``<workdir>/jax_cache`` unless ``--jax_compilation_cache_dir`` is set.
"""

import os
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from golddiff_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/<name>.py[:arg]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run's outputs.")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cli.quiet_library_logs()
  if _CONFIG.value.get("mesh", {}).get("distributed", False) is True:
    try:  # multi-host: coordinator, process id and count come from the cluster environment
      jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
      cli.fail(f"jax.distributed.initialize() failed (mesh.distributed=True): {e}")
  logging.info("JAX process %d / %d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  if not jax.config.jax_compilation_cache_dir:  # reruns reuse compiled steps too
    jax.config.update("jax_compilation_cache_dir", os.path.join(_WORKDIR.value, "jax_cache"))
  from golddiff_jax import run, run_config  # pylint: disable=g-import-not-at-top
  try:
    run_config.check_overrides(_CONFIG.value, cli.config_overrides(sys.argv, _CONFIG.name))
    run.run(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    cli.fail(e)


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_WORKDIR]))
