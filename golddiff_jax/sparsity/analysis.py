"""The study's bookkeeping: collect run results, K*(τ) per run, seed statistics, best r, and the
decision rule of docs/sparsity.md. Pure functions over the ``metrics.json`` dicts that
`golddiff_jax.sparsity.study.run` writes (no plotting here).

τ is set per (kind, s, d, seed) from the unregularised run (``target == "none"``) of the same
data: ``tau_base`` = 1.1 × its quality at the largest K; the robustness threshold ``tau_floor``
= 2 × the data's own finite-sample value (a fresh draw scored like a model). Qualities: ``sw2``
(primary, over all d coordinates) and ``on_support_sw2`` (the active coordinates only).
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Iterable, Sequence

import numpy as np

from golddiff_jax.sparsity import metrics

# Two-sided 95% Student-t quantiles t_{0.975, n−1} for n = 2 … 10 seeds.
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306,
        10: 2.262}
GROUP = ("kind", "s", "d", "target", "r")


def load_runs(workdir: str) -> list[dict]:
  """Every finished run's ``metrics.json`` under ``workdir`` (one folder per run), with its
  folder name as ``name``."""
  runs = []
  for path in sorted(glob.glob(os.path.join(workdir, "*", "metrics.json"))):
    with open(path) as f:
      run = json.load(f)
    if "records" in run:
      run["name"] = os.path.basename(os.path.dirname(path))
      runs.append(run)
  return runs


def curve(run: dict, quality: str = "sw2", sampler: str = "ddpm") -> tuple[list, list]:
  """(K grid, quality per K) of one run (NaN where a sample set was not finite)."""
  recs = sorted((r for r in run["records"] if r["sampler"] == sampler), key=lambda r: r["k"])
  return [r["k"] for r in recs], [r.get(quality, math.nan) if r["finite"] else math.nan
                                  for r in recs]


def at_k(run: dict, key: str, k: int | None = None, sampler: str = "ddpm") -> float:
  """A record's ``key`` at K = k (default: the largest K)."""
  recs = [r for r in run["records"] if r["sampler"] == sampler]
  rec = max(recs, key=lambda r: r["k"]) if k is None else next(r for r in recs if r["k"] == k)
  return float(rec.get(key, math.nan)) if rec["finite"] else math.nan


def _data_key(run: dict) -> tuple:
  return (run["kind"], run["s"], run["d"], run["seed"])


def add_k_star(runs: list[dict], quality: str = "sw2", sampler: str = "ddpm") -> None:
  """Adds ``k_star_base`` and ``k_star_floor`` (None: no K reached τ) for ``quality``, and the
  thresholds used, to every run whose baseline exists."""
  base = {_data_key(r): r for r in runs if r["target"] == "none"}
  for run in runs:
    ref = base.get(_data_key(run))
    ks, q = curve(run, quality, sampler)
    floor_key = quality if quality in run["floor"] else "sw2"
    taus = {"base": None if ref is None else 1.1 * at_k(ref, quality, sampler=sampler),
            "floor": 2.0 * float(run["floor"][floor_key])}
    for name, tau in taus.items():
      run[f"tau_{name}_{quality}"] = tau
      run[f"k_star_{name}_{quality}"] = None if tau is None else metrics.k_star(ks, q, tau)


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
  """Mean, 95% half-width (Student t over seeds; NaN for one value) and count of the finite
  values."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if len(v) == 0:
    return math.nan, math.nan, 0
  if len(v) == 1:
    return float(v[0]), math.nan, 1
  t = T975.get(len(v), 1.96)
  return float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(len(v))), len(v)


def log_k(k: int | None, k_max: int) -> float:
  """log K*, with 'never reached' counted as 2·K_max (censored; flagged in the tables)."""
  return math.log(2 * k_max if k is None else k)


def groups(runs: Iterable[dict]) -> dict[tuple, list[dict]]:
  out: dict[tuple, list[dict]] = {}
  for run in runs:
    out.setdefault(tuple(run[g] for g in GROUP), []).append(run)
  return out


def summarise(runs: list[dict], quality: str = "sw2") -> list[dict]:
  """One row per (kind, s, d, target, r): seeds, K* (geometric mean over seeds, censored at
  2·K_max), and mean ± 95% of SW2, on-support SW2, coverage and off-support energy at K_max."""
  rows = []
  for key, members in sorted(groups(runs).items(), key=lambda kv: tuple(map(str, kv[0]))):
    k_max = max(curve(members[0], quality)[0])
    row = dict(zip(GROUP, key))
    row["seeds"] = len(members)
    for name in ("base", "floor"):
      stars = [m.get(f"k_star_{name}_{quality}") for m in members]
      logs = [log_k(k, k_max) for k in stars]
      mean, ci, _ = mean_ci(logs)
      row[f"k_star_{name}"] = math.exp(mean) if np.isfinite(mean) else math.nan
      row[f"k_star_{name}_ci"] = ci            # on the log scale
      row[f"k_star_{name}_censored"] = sum(k is None for k in stars)
      row[f"k_star_{name}_runs"] = stars
    for metric in ("sw2", "on_support_sw2", "mode_coverage", "off_support_energy", "mmd2",
                   "nearest_train"):
      row[metric], row[f"{metric}_ci"], _ = mean_ci([at_k(m, metric) for m in members])
    rows.append(row)
  return rows


def best_r(rows: list[dict], *, kind: str = "sparse") -> dict[str, float]:
  """Per target: the r with the smallest K*_base averaged (in log) over the (s, d) cells where
  every r of that target ran (ties: the smaller SW2 at K_max)."""
  best: dict[str, tuple] = {}
  by_target: dict[tuple, list[dict]] = {}
  for row in rows:
    if row["kind"] == kind and row["target"] != "none":
      by_target.setdefault((row["target"], row["r"]), []).append(row)
  common: dict[str, set] = {}   # per target, the (s, d) every r was run at (the screen's grid)
  for (target, _), members in by_target.items():
    cells = {(m["s"], m["d"]) for m in members}
    common[target] = cells if target not in common else common[target] & cells
  for (target, r), members in by_target.items():
    members = [m for m in members if (m["s"], m["d"]) in common[target]]
    score = (float(np.mean([math.log(m["k_star_base"]) for m in members])),
             float(np.mean([m["sw2"] for m in members])))
    if target not in best or score < best[target][0]:
      best[target] = (score, r)
  return {t: v[1] for t, v in sorted(best.items())}


def slope(rows: list[dict], *, kind: str, s: int, target: str, r: float,
          key: str = "k_star_base") -> float:
  """Least-squares slope of log K* against log d over the rows of one configuration."""
  pts = [(math.log(row["d"]), math.log(row[key])) for row in rows
         if (row["kind"], row["s"], row["target"], row["r"]) == (kind, s, target, r)
         and np.isfinite(row[key])]
  if len({p[0] for p in pts}) < 2:
    return math.nan
  x, y = np.array(pts).T
  return float(np.polyfit(x, y, 1)[0])


def decision(rows: list[dict], *, kind: str, s: int, target: str, r: float,
             flat: float = 0.1) -> dict:
  """The decision rule for one (target, r) against the baseline on the same data.

  (a) the baseline's log K* grows with log d (slope > ``flat``) while the regularised slope is
  within ±``flat`` ("roughly flat") and every regularised run reaches τ (a K* censored at
  every d is flat only because it is never reached); (b) SW2 at K_max is not worse than the baseline's beyond
  the larger of the two 95% half-widths, at every d; (c) the same for mode coverage (not
  lower). With the baseline already flat the verdict is ``null``.
  """
  base_slope = slope(rows, kind=kind, s=s, target="none", r=0.0)
  reg_slope = slope(rows, kind=kind, s=s, target=target, r=r)
  pick = lambda t, rr: {row["d"]: row for row in rows  # noqa: E731
                        if (row["kind"], row["s"], row["target"], row["r"]) == (kind, s, t, rr)}
  base, reg = pick("none", 0.0), pick(target, r)
  def not_worse(metric, higher_is_better=False):
    ok = True
    for d, row in reg.items():
      if d not in base:
        continue
      slack = np.nanmax([row[f"{metric}_ci"], base[d][f"{metric}_ci"], 0.0])
      diff = (base[d][metric] - row[metric]) if higher_is_better else (row[metric]
                                                                      - base[d][metric])
      ok &= bool(diff <= slack)
    return ok
  reached = all(row["k_star_base_censored"] == 0 for row in reg.values())
  a = bool(base_slope > flat and abs(reg_slope) <= flat and reached)
  verdict = ("null" if np.isfinite(base_slope) and base_slope <= flat else
             "supported" if a and not_worse("sw2") and not_worse("mode_coverage", True)
             else "not supported")
  return {"target": target, "r": r, "kind": kind, "s": s, "base_slope": base_slope,
          "reg_slope": reg_slope, "a": a, "b": not_worse("sw2"),
          "c": not_worse("mode_coverage", True), "verdict": verdict}
