"""Sparsity study on the real digits: the U-Net at r = 0 and every target at three r (docs/sparsity.md).

    python experiments/sweep.py --sweep=experiments/sweeps/sparsity_digits.py \\
        --workdir=workdir/sparsity_digits [--sweep_arg=quick] [--set=train.num_steps=...]
    python experiments/sparsity_digits_report.py --workdir=workdir/sparsity_digits --out=docs/sparsity

The unregularised baseline and each target in {weights, score, eps, x0} at r ∈ {1e-3, 1e-2,
1e-1} (the screen's decades), seed 0; ``quick``: the baseline and each target at r = 1e-2. Each
run trains the U-Net and samples K ∈ {10, 20, 50, 1000} with DDPM and DDIM
(`golddiff_jax.sparsity.digits.run`); finished runs are skipped on a rerun. The default size is
GPU-sized (configs/sparsity/digits.py says what to change for 2 CPU cores).
"""

from golddiff_jax.sparsity.study import run  # noqa: F401  (the sweep's runner)

from experiments.sweeps.sparsity_screen import R_SCREEN, TARGETS  # noqa: E402

BASE_CONFIG = "configs/sparsity/digits.py"


def name(target: str, r: float, seed: int = 0) -> str:
  return f"digits_{target}_r{r:g}_seed{seed}"


def get_sweep(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"sweep_arg must be empty or 'quick', got {arg!r}")
  rs = (1e-2,) if arg == "quick" else R_SCREEN
  runs = [{"name": name("none", 0.0), "reg.target": "none", "reg.r": 0.0}]
  runs += [{"name": name(t, r), "reg.target": t, "reg.r": float(r)} for t in TARGETS for r in rs]
  return runs
