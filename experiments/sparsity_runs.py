"""Lists a sparsity sweep's runs as "NAME CONFIG:ARGS" lines for experiments/parallel_runs.sh.

    python experiments/sparsity_runs.py --sweep=experiments/sweeps/sparsity_digits.py > runs.txt
    python experiments/sparsity_runs.py --sweep=experiments/sweeps/sparsity_screen.py \\
        --sweep_arg=full --skip_done=workdir/sparsity_screen > runs.txt

Each run's overrides are turned into the config file's ``:`` arguments (``reg.target`` → target,
``reg.r`` → r, ``data.d`` → d, ``data.s`` → s, ``data.kind`` → kind, ``seed``), so the
parallel runs are the sweep's runs; ``--skip_done`` leaves out runs whose metrics.json exists.
"""

import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from experiments import sweep  # noqa: E402  pylint: disable=g-import-not-at-top

_SWEEP = flags.DEFINE_string("sweep", None, "Study file (experiments/sweeps/sparsity_*.py).",
                             required=True)
_ARG = flags.DEFINE_string("sweep_arg", None, "The study's --sweep_arg.")
_SKIP = flags.DEFINE_string("skip_done", None, "Workdir whose finished runs are left out.")

ARGS = {"reg.target": "target", "reg.r": "r", "data.d": "d", "data.s": "s", "data.kind": "kind",
        "seed": "seed"}


def lines(study, arg, skip_done=None) -> list[str]:
  out = []
  for run in study.get_sweep(arg) if arg is not None else study.get_sweep():
    unknown = sorted(set(run) - set(ARGS) - {"name"})
    if unknown:
      raise ValueError(f"run {run['name']}: overrides {unknown} have no config argument")
    if skip_done and os.path.exists(os.path.join(skip_done, run["name"], "metrics.json")):
      continue
    args = ",".join(f"{ARGS[k]}={v}" for k, v in run.items() if k in ARGS)
    out.append(f"{run['name']} {study.BASE_CONFIG}:{args}")
  return out


def main(argv):
  del argv
  study = sweep.load_module(_SWEEP.value, "study")
  print("\n".join(lines(study, _ARG.value, _SKIP.value)))


if __name__ == "__main__":
  app.run(main)
