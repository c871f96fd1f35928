r"""Tables, grids and plots of the sparsity study on the real digits, from a workdir of runs.

  python experiments/sparsity_digits_report.py --workdir=workdir/sparsity_digits \
      --out=docs/sparsity

Reads every ``<workdir>/<run>/metrics.json`` and ``samples.npz`` written by
`golddiff_jax.sparsity.digits.run` (experiments/sweeps/sparsity_digits.py) and writes to ``--out``:

* ``digits_summary.md`` and ``digits_summary.csv``: every run × sampler × K with SW2, MMD²,
  background energy, ink fraction, class coverage and nearest-training-digit distance, and the
  floor (real training digits scored the same way);
* ``digits_best_r.json``: each target's best r among its finished runs, by the lowest DDPM SW2
  averaged over the few-step K (K < 1000; the question is whether a penalty buys few-step quality);
  a run whose network was trained for other than its configured steps is listed but not compared;
* ``digits_grid_<sampler>.png``: the first 16 samples (the same latents in every run) of the
  baseline and of each target at its best r (rows) at every K (columns);
* ``digits_sw2_vs_k.png``: SW2 against K for every run, one panel per sampler.
"""

import csv
import json
import os
import sys

from absl import app, flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from golddiff_jax import outputs  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax.sparsity import digits  # noqa: E402  pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of digits runs.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the workdir).")

TARGETS = ("weights", "score", "eps", "x0")
COLUMNS = ("sw2", "mmd2", "background_energy", "ink_fraction", "class_coverage", "nearest_train")
SHOWN = 16   # samples per grid cell (4 × 4)


def load_runs(workdir: str) -> list[dict]:
  """Every finished run (metrics.json present), with its kept samples, ordered by (target, r)."""
  runs = []
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name, digits.METRICS_FILE)
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      run = {"name": name, **json.load(f)}
    # A run whose network was trained for other than its configured steps (a checkpoint past
    # train.num_steps, which the trainer now refuses) is shown but not compared.
    with open(os.path.join(workdir, name, "config.json")) as f:
      configured = json.load(f)["train"]["num_steps"]
    run["comparable"] = run["train"].get("step") == configured
    samples = os.path.join(workdir, name, digits.SAMPLES_FILE)
    run["samples"] = dict(np.load(samples)) if os.path.isfile(samples) else {}
    runs.append(run)
  order = {t: i for i, t in enumerate(("none",) + TARGETS)}
  return sorted(runs, key=lambda r: (order.get(r["target"], 99), r["r"]))


def few_step_sw2(run: dict, sampler: str = "ddpm") -> float:
  vals = [rec["sw2"] for rec in run["records"]
          if rec["sampler"] == sampler and rec["k"] < 1000 and rec.get("finite")]
  return float(np.mean(vals)) if vals else float("inf")


def best_r(runs: list[dict]) -> dict:
  """Per target: the finished run with the lowest few-step DDPM SW2 (its name, r, value)."""
  best = {}
  for run in runs:
    t = run["target"]
    if t == "none" or not run["comparable"]:
      continue
    if t not in best or few_step_sw2(run) < best[t]["few_step_sw2"]:
      best[t] = {"name": run["name"], "r": run["r"], "few_step_sw2": few_step_sw2(run)}
  return best


def _label(run: dict) -> str:
  label = "r = 0" if run["target"] == "none" else f"{run['target']} r={run['r']:g}"
  return label if run["comparable"] else f"{label} ({run['train']['step']} steps, not compared)"


def write_tables(runs: list[dict], out: str) -> None:
  rows = []
  for run in runs:
    for rec in run["records"]:
      rows.append({"run": _label(run), "sampler": rec["sampler"], "k": rec["k"],
                   **{c: rec.get(c) for c in COLUMNS}})
  with open(os.path.join(out, "digits_summary.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["run", "sampler", "k", *COLUMNS])
    w.writeheader()
    w.writerows(rows)
  floor = runs[0]["floor"]
  lines = ["| run | sampler | K | " + " | ".join(COLUMNS) + " |",
           "|---|---|---|" + "---|" * len(COLUMNS)]
  fmt = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
  for row in rows:
    lines.append(f"| {row['run']} | {row['sampler']} | {row['k']} | "
                 + " | ".join(fmt(row[c]) for c in COLUMNS) + " |")
  lines.append("| real digits (floor) | — | — | "
               + " | ".join(fmt(floor.get(c)) for c in COLUMNS) + " |")
  text = "\n".join(lines) + "\n"
  outputs.atomic_write(os.path.join(out, "digits_summary.md"), lambda f: f.write(text), mode="w")


def plot_grids(runs: list[dict], best: dict, out: str) -> None:
  base = [r for r in runs if r["target"] == "none"]
  chosen = base + [r for r in runs if r["target"] != "none"
                   and r["name"] == best.get(r["target"], {}).get("name")]
  for sampler in ("ddpm", "ddim"):
    ks = sorted({rec["k"] for r in chosen for rec in r["records"] if rec["sampler"] == sampler})
    if not ks:
      continue
    fig, axes = plt.subplots(len(chosen), len(ks), figsize=(2.2 * len(ks), 2.3 * len(chosen)),
                             squeeze=False)
    for i, run in enumerate(chosen):
      for j, k in enumerate(ks):
        ax = axes[i, j]
        ax.set_xticks([])
        ax.set_yticks([])
        kept = run["samples"].get(f"{sampler}_k{k}")
        if kept is not None and len(kept):
          images = kept[:SHOWN].astype(np.float32) / 127.5 - 1.0
          ax.imshow(outputs.image_grid(images, columns=4, pad=1), cmap="gray", vmin=0, vmax=255)
        if i == 0:
          ax.set_title(f"K = {k}")
        if j == 0:
          ax.set_ylabel(_label(run))
    fig.suptitle(f"{sampler.upper()} samples on the real digits (same latents in every row)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"digits_grid_{sampler}.png"), dpi=100)
    plt.close(fig)


def plot_sw2(runs: list[dict], out: str) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
  for ax, sampler in zip(axes[0], ("ddpm", "ddim")):
    for run in runs:
      recs = [rec for rec in run["records"] if rec["sampler"] == sampler and rec.get("finite")]
      if recs:
        ax.plot([rec["k"] for rec in recs], [rec["sw2"] for rec in recs], "o-",
                lw=2.5 if run["target"] == "none" else 1.2, label=_label(run),
                color="k" if run["target"] == "none" else None)
    ax.axhline(runs[0]["floor"]["sw2"], color="grey", ls=":", label="real digits")
    ax.set_xscale("log")
    ax.set_xlabel("K (sampling steps)")
    ax.set_ylabel("SW2 to held-out digits (lower is better)")
    ax.set_title(sampler.upper())
  axes[0, 1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "digits_sw2_vs_k.png"), dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  out = _OUT.value or _WORKDIR.value
  runs = load_runs(_WORKDIR.value)
  if not runs:
    raise app.UsageError(f"no finished digits runs in {_WORKDIR.value}")
  os.makedirs(out, exist_ok=True)
  best = best_r(runs)
  write_tables(runs, out)
  outputs.write_json(os.path.join(out, "digits_best_r.json"), best)
  plot_grids(runs, best, out)
  plot_sw2(runs, out)
  print(json.dumps(best, indent=1))


if __name__ == "__main__":
  app.run(main)
