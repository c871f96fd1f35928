r"""Tables, plots and the verdict of the sparsity study from a sweep workdir.

  python experiments/sparsity_report.py --workdir=workdir/sparsity_screen[,workdir/confirm] \
      [--out=docs/sparsity] [--quality=sw2|on_support_sw2]

Reads every ``<workdir>/<run>/metrics.json`` (experiments/sweeps/sparsity_*.py runs) and writes
to ``--out`` (default: the workdir): ``summary.csv`` (one row per run), ``summary_<quality>.md``
(per kind, s, d, target, r: K* and mean ± 95% over seeds), ``best_r.json`` (per target, by
K*), ``decision_<quality>.md`` (the decision rule per target at its best r), and the plots
``quality_vs_k_<quality>.png`` and ``kstar_vs_d_<quality>.png``. Prints the stage-B command.
"""

import csv
import json
import math
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

from golddiff_jax.sparsity import analysis  # noqa: E402  pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_list("workdir", None, "Sweep workdir(s) (one folder per run); runs of "
                             "several workdirs (e.g. stage A and stage B) are pooled.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: the workdir).")
_QUALITY = flags.DEFINE_enum("quality", "sw2", ["sw2", "on_support_sw2"], "K* quality metric.")
TARGETS = ("weights", "score", "eps", "x0")


def _fmt(v, digits=4):
  if v is None:
    return ">max"
  if isinstance(v, float):
    return "" if math.isnan(v) else f"{v:.{digits}g}"
  return str(v)


def write_tables(runs, rows, out, quality):
  fields = ["name", "kind", "s", "d", "target", "r", "seed", "prox",
            f"k_star_base_{quality}", f"k_star_floor_{quality}", f"tau_base_{quality}",
            f"tau_floor_{quality}", "sw2_kmax", "on_support_sw2_kmax", "mode_coverage_kmax",
            "off_support_energy_kmax", "nearest_train", "floor_sw2", "kernel_zero_fraction",
            "train_seconds", "eval_seconds"]
  with open(os.path.join(out, "summary.csv" if quality == "sw2" else f"summary_{quality}.csv"),
            "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for run in runs:
      w.writerow({**{k: run.get(k) for k in fields},
                  "sw2_kmax": analysis.at_k(run, "sw2"),
                  "on_support_sw2_kmax": analysis.at_k(run, "on_support_sw2"),
                  "mode_coverage_kmax": analysis.at_k(run, "mode_coverage"),
                  "off_support_energy_kmax": analysis.at_k(run, "off_support_energy"),
                  "nearest_train": analysis.at_k(run, "nearest_train"),
                  "floor_sw2": run["floor"]["sw2"],
                  "kernel_zero_fraction": run["train"].get("kernel_zero_fraction")})
  lines = [f"K* = smallest K with {quality} ≤ τ (geometric mean over seeds; runs that never reach "
           "τ count as 2·K_max, their number in brackets). Other columns: mean ± 95% "
           "(Student t over seeds) at K_max.", "",
           "| kind | s | d | target | r | seeds | K*(τ_base) | K*(τ_floor) | SW2 | on-support SW2 "
           "| coverage | off-support E | MMD² |", "|" + "---|" * 13]
  for row in rows:
    def pm(m):
      ci = row[f"{m}_ci"]
      return _fmt(row[m]) + ("" if math.isnan(ci) else f" ± {ci:.2g}")
    lines.append(
        f"| {row['kind']} | {row['s']} | {row['d']} | {row['target']} | {row['r']:g} | "
        f"{row['seeds']} | {_fmt(row['k_star_base'], 3)} [{row['k_star_base_censored']}] | "
        f"{_fmt(row['k_star_floor'], 3)} [{row['k_star_floor_censored']}] | {pm('sw2')} | "
        f"{pm('on_support_sw2')} | {pm('mode_coverage')} | {pm('off_support_energy')} | "
        f"{pm('mmd2')} |")
  with open(os.path.join(out, f"summary_{quality}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


SCREEN_DIMS = (8, 128)   # the screen's d: the quality-vs-K plot shows these two


def plot_quality_vs_k(runs, best, out, quality):
  """Quality against K per target on sparse s = 2 data at the screen's d (solid 8, dashed 128):
  r = 0 black, each r red → yellow (thick: best). One legend per panel, one entry per r."""
  fig, axes = plt.subplots(1, len(TARGETS), figsize=(4.2 * len(TARGETS), 4.2), sharey=True)
  styles = {SCREEN_DIMS[0]: "-", SCREEN_DIMS[1]: "--"}
  for ax, target in zip(axes, TARGETS):
    rs = sorted({m["r"] for m in runs if m["target"] == target and m["kind"] == "sparse"})
    cmap = plt.get_cmap("autumn")
    lines = [("none", 0.0, "black")] + [
        (target, r, cmap(0.85 * j / max(len(rs) - 1, 1))) for j, r in enumerate(rs)]
    for tgt, r, colour in lines:
      for d, style in styles.items():
        members = [m for m in runs if (m["kind"], m["s"], m["d"], m["target"], m["r"]) ==
                   ("sparse", 2, d, tgt, r)]
        if not members:
          continue
        ks = analysis.curve(members[0], quality)[0]
        q = np.nanmean([analysis.curve(m, quality)[1] for m in members], axis=0)
        label = None
        if d == SCREEN_DIMS[0]:
          label = f"{'r=0' if tgt == 'none' else f'r={r:g}'}{' (best)' if r == best.get(tgt) else ''}"
        ax.plot(ks, q, style, color=colour, marker="o", ms=2.5, label=label,
                lw=2.2 if tgt == "none" or r == best.get(tgt) else 1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"target = {target}")
    ax.set_xlabel("sampling steps K (DDPM)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, ncol=2, loc="upper right", framealpha=0.8)
  axes[0].set_ylabel(f"{quality} vs held-out (mean over seeds)")
  fig.suptitle("Quality against K on coordinate-sparse data (s = 2): r = 0 (black) and each r "
               "(red → yellow, thick = best by K*); solid d = 8, dashed d = 128; mean over seeds")
  fig.tight_layout()
  fig.savefig(os.path.join(out, f"quality_vs_k_{quality}.png"), dpi=110)
  plt.close(fig)


def plot_kstar_vs_d(rows, best, out, quality):
  kinds = [k for k in ("sparse", "rotated") if any(r["kind"] == k for r in rows)]
  fig, axes = plt.subplots(len(kinds), len(TARGETS), figsize=(4.2 * len(TARGETS),
                                                              3.4 * len(kinds)),
                           sharex=True, sharey=True, squeeze=False)
  cmap = plt.get_cmap("autumn")
  for i, kind in enumerate(kinds):
    for ax, target in zip(axes[i], TARGETS):
      rs = multi_d(rows, kind, target)
      lines = [("none", 0.0, "black")] + [
          (target, r, cmap(0.85 * j / max(len(rs) - 1, 1))) for j, r in enumerate(rs)]
      for tgt, r, colour in lines:
        pts = sorted((row["d"], row["k_star_base"], row["k_star_base_ci"]) for row in rows
                     if (row["kind"], row["s"], row["target"], row["r"]) == (kind, 2, tgt, r))
        if not pts:
          continue
        d, k, ci = map(np.array, zip(*pts))
        ci = np.nan_to_num(ci)
        ax.errorbar(d, k, yerr=[k - k * np.exp(-ci), k * np.exp(ci) - k], color=colour,
                    marker="o", capsize=3, lw=2.2 if tgt == "none" or r == best.get(tgt) else 1,
                    zorder=3 if tgt == "none" else 2,
                    label="r=0" if tgt == "none" else
                    f"r={r:g}{' (best)' if r == best.get(tgt) else ''}")
      ax.set_xscale("log", base=2)
      ax.set_yscale("log", base=2)
      ax.set_title(f"{kind}: target = {target}")
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=7)
      if i == len(kinds) - 1:
        ax.set_xlabel("ambient dimension d")
    axes[i][0].set_ylabel("K*(τ = 1.1 × baseline at K=1000)")
  fig.suptitle(f"Steps to quality ({quality}) against d, s = 2: r = 0 (black), each r run at "
               "two or more d (red → yellow); bars: 95% over seeds (log scale)")
  fig.tight_layout()
  fig.savefig(os.path.join(out, f"kstar_vs_d_{quality}.png"), dpi=110)
  plt.close(fig)


def multi_d(rows, kind, target, s=2):
  """The r values of ``target`` run at two or more d on (kind, s)."""
  dims = {}
  for row in rows:
    if (row["kind"], row["s"], row["target"]) == (kind, s, target):
      dims.setdefault(row["r"], set()).add(row["d"])
  return sorted(r for r, ds in dims.items() if len(ds) >= 2)


def main(argv):
  del argv
  if not _WORKDIR.value or not all(os.path.isdir(w) for w in _WORKDIR.value):
    print(f"error: --workdir must name existing sweep folders, got {_WORKDIR.value!r}",
          file=sys.stderr)
    sys.exit(2)
  out = _OUT.value or _WORKDIR.value[0]
  os.makedirs(out, exist_ok=True)
  quality = _QUALITY.value
  runs = [run for w in _WORKDIR.value for run in analysis.load_runs(w)]
  if not runs:
    print(f"error: no finished runs (metrics.json) under {_WORKDIR.value}", file=sys.stderr)
    sys.exit(2)
  analysis.add_k_star(runs, quality)
  rows = analysis.summarise(runs, quality)
  best = analysis.best_r(rows)
  write_tables(runs, rows, out, quality)
  with open(os.path.join(out, f"best_r_{quality}.json"), "w") as f:
    json.dump(best, f, indent=1)
  lines = ["| kind | s | target | r | slope base | slope reg | (a) | (b) | (c) | verdict |",
           "|" + "---|" * 10]
  for kind in sorted({r["kind"] for r in runs}):
    for s in sorted({r["s"] for r in runs if r["kind"] == kind}):
      for target, r in [(t, r) for t in TARGETS for r in multi_d(rows, kind, t, s)]:
        dec = analysis.decision(rows, kind=kind, s=s, target=target, r=r)
        lines.append(f"| {kind} | {s} | {target} | {r:g}{' (best)' if best.get(target) == r else ''}"
                     f" | {dec['base_slope']:.3g} | "
                     f"{dec['reg_slope']:.3g} | {dec['a']} | {dec['b']} | {dec['c']} | "
                     f"{dec['verdict']} |")
  with open(os.path.join(out, f"decision_{quality}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  plot_quality_vs_k(runs, best, out, quality)
  plot_kstar_vs_d(rows, best, out, quality)
  print("\n".join(lines))
  arg = ",".join(f"{t}={r:g}" for t, r in best.items())
  print(f"\n{len(runs)} runs. Stage B: python experiments/sweep.py "
        f"--sweep=experiments/sweeps/sparsity_confirm.py --workdir=<dir> --sweep_arg={arg}")


if __name__ == "__main__":
  app.run(main)
