r"""Trains and evaluates one sparsity-study run: (target, r, d, seed) on the toy data, or
(target, r, seed) with the U-Net on the real digits.

  python experiments/sparsity_run.py --config=configs/sparsity/toy.py:target=x0,r=1e-3,d=128 \
      --workdir=workdir/sparsity/one [--config.train.num_steps=500 ...]
  python experiments/sparsity_run.py --config=configs/sparsity/digits.py:target=eps,r=0.01 \
      --workdir=workdir/sparsity_digits/one

Writes the trainer's files (config.json, checkpoints/, train_metrics.jsonl, train_summary.json)
and metrics.json (quality against K; see `golddiff_jax.sparsity.study`). A rerun resumes. Bad
input prints one ``error: ...`` line and exits with status 2, writing nothing.
"""

import json
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
    "config", None, "Config file (configs/sparsity/toy.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run.")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from golddiff_jax.sparsity import study  # pylint: disable=g-import-not-at-top
  try:
    result = study.run(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    cli.fail(e)
  shown = ("sampler", "k", "sw2", "mode_coverage", "off_support_energy", "class_coverage",
           "background_energy", "ink_fraction")
  for rec in result["records"]:
    print(json.dumps({k: rec[k] for k in shown if k in rec}))


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_WORKDIR],
                                              example="configs/sparsity/toy.py"))
