r"""Trains the reference U-Net (docs/method.md §8.1), resuming when the workdir already has
checkpoints.

  python experiments/train_reference.py --config=configs/train/default.py \
      --workdir=workdir/reference_default [--config.train.num_steps=500 ...]

Override any config field with ``--config.section.field=value`` and pass ``--jax_*`` flags. The
workdir gets ``config.json``, ``checkpoints/``, ``train_metrics.jsonl`` and ``train_summary.json``
(see `golddiff_jax.models.train`). Bad input prints one ``error: ...`` line to stderr and exits
with status 2, without a traceback.
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # the configs package lives at the repository root

from golddiff_jax import cli  # noqa: E402  pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/train/<name>.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; ours still shows
  try:
    os.makedirs(_WORKDIR.value, exist_ok=True)
  except OSError as e:
    cli.fail(f"workdir {_WORKDIR.value!r} cannot be created: {e.strerror or e}")
  if not jax.config.jax_compilation_cache_dir:  # a resumed run reuses the compiled step
    jax.config.update("jax_compilation_cache_dir", os.path.join(_WORKDIR.value, "jax_cache"))
  from golddiff_jax.models import train  # pylint: disable=g-import-not-at-top
  handler = std_logging.FileHandler(os.path.join(_WORKDIR.value, "log.txt"))
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  train.log.addHandler(handler)
  train.log.info("JAX process %d / %d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.default_backend())
  try:
    summary = train.train(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    train.log.error("%s", e)
    cli.fail(e)
  train.log.info("done: %s", summary)


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_WORKDIR],
                                              example="configs/train/default.py"))
