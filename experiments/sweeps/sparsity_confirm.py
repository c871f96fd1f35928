"""Sparsity study, stage B (confirm): baseline vs each target's best r across d (docs/sparsity.md).

    python experiments/sweep.py --sweep=experiments/sweeps/sparsity_confirm.py \\
        --workdir=workdir/sparsity_screen \\
        --sweep_arg=weights=0.1,score=0.1,eps=0.01,x0=0.1[,seeds=5,dims=8-32-128-512,s=2-4]

``--sweep_arg`` names each target's best r from the screen (experiments/sparsity_report.py
prints it); targets left out are not run. Options: ``seeds`` (count, default 5), ``dims``
(default 8-32-128-512), ``s`` (default 2-4), ``kinds`` (default sparse-rotated). Run names match
the screen's, so pointing it at the screen's workdir reuses the runs both stages share. Runs are
ordered seed by seed, cheapest d first.
"""

from golddiff_jax.sparsity.study import run  # noqa: F401  (the sweep's runner)

from experiments.sweeps.sparsity_screen import BASE_CONFIG, TARGETS, runs_for  # noqa: F401,E402

DEFAULTS = {"seeds": "5", "dims": "8-32-128-512", "s": "2-4", "kinds": "sparse-rotated"}


def parse(arg: str | None) -> tuple[dict, dict]:
  best, opts = {}, dict(DEFAULTS)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key in TARGETS:
      best[key] = float(value)
    elif key in opts:
      opts[key] = value
    else:
      raise ValueError(f"unknown sweep_arg {key!r}: expected target=r for {list(TARGETS)} or "
                       f"one of {sorted(DEFAULTS)}")
  return best, opts


def get_sweep(arg=None):
  best, opts = parse(arg)
  dims = [int(d) for d in opts["dims"].split("-")]
  sparsity = [int(s) for s in opts["s"].split("-")]
  kinds = opts["kinds"].split("-")
  runs = []
  for seed in range(int(opts["seeds"])):
    for kind in kinds:
      for s in sparsity:
        for d in dims:
          if s > d:
            continue
          runs.append(runs_for("none", 0.0, d, seed, kind, s))
          runs += [runs_for(t, r, d, seed, kind, s) for t, r in best.items()]
  return runs
