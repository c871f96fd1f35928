"""Sparsity study, stage A (screen): which r per penalty target? (docs/sparsity.md)

    python experiments/sweep.py --sweep=experiments/sweeps/sparsity_screen.py \\
        --workdir=workdir/sparsity_screen [--sweep_arg=full|quick]
    python experiments/sparsity_report.py --workdir=workdir/sparsity_screen

Coordinate-sparse toy data, s = 2, d ∈ {8, 128}, seeds {0, 1}; the unregularised baseline and
every target in {weights, score, eps, x0} at r ∈ {1e-3, 1e-2, 1e-1} (the decades of the full
grid; ``--sweep_arg=full`` runs all seven r of the full grid, ``quick`` seed 0 only). Runs are
ordered seed by seed, so a stopped screen has whole seeds. Each run trains and evaluates in
this process (`golddiff_jax.sparsity.study.run`); finished runs are skipped on a rerun.
"""

from golddiff_jax.sparsity.study import run  # noqa: F401  (the sweep's runner)

BASE_CONFIG = "configs/sparsity/toy.py"
TARGETS = ("weights", "score", "eps", "x0")
R_SCREEN = (1e-3, 1e-2, 1e-1)
R_FULL = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DIMS = (8, 128)
SEEDS = (0, 1)


def name(target: str, r: float, d: int, seed: int, kind: str = "sparse", s: int = 2) -> str:
  return f"{kind}_s{s}_d{d}_{target}_r{r:g}_seed{seed}"


def runs_for(target, r, d, seed, kind="sparse", s=2) -> dict:
  return {"name": name(target, r, d, seed, kind, s), "reg.target": target, "reg.r": float(r),
          "data.d": d, "data.s": s, "data.kind": kind, "seed": seed}


def get_sweep(arg=None):
  rs = R_FULL if arg == "full" else R_SCREEN
  seeds = SEEDS[:1] if arg == "quick" else SEEDS
  runs = []
  for seed in seeds:
    for d in DIMS:
      runs.append(runs_for("none", 0.0, d, seed))
    for target in TARGETS:
      for r in rs:
        for d in DIMS:
          runs.append(runs_for(target, r, d, seed))
  return runs
