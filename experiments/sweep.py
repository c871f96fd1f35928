"""Runs a study, one run per override dict, with resume and a results table.

    python experiments/sweep.py --sweep=experiments/sweeps/ablations.py --workdir=DIR

A study file defines ``BASE_CONFIG`` (a config path, optionally ``path:arg``, relative to the
repository root) and ``get_sweep()`` returning a list of override dicts: ``{"name": ...,
"golden.dynamic_m": False, ...}`` (``name`` optional: it defaults to the overrides). It may define
``BASELINE``, the name of the run the others are compared with (MSE and r² of the final images,
docs/method.md §8.4: columns ``mse_vs_baseline``, ``r2_vs_baseline``), and ``get_sweep`` may
take the ``--sweep_arg`` string. A study of another kind of run defines ``run(config, workdir)``
(it must write ``config.json`` and, last, ``metrics.json``); the default is
`golddiff_jax.run.run` (e.g. experiments/sweeps/sparsity_screen.py).

Each run goes to ``DIR/<name>`` through `golddiff_jax.run.run`, in this process (compiled steps
and the TFDS import are shared; the fitted statistics are cached once in ``DIR/stats``). A run
whose ``config.json`` equals its config and whose ``metrics.json`` was written after it for
that config (its ``config_fingerprint``) is skipped, so an interrupted sweep resumes where it
stopped. The results of all runs are collected into ``DIR/results.csv`` and ``DIR/results.md``
(also when the sweep is interrupted with Ctrl-C, which exits with status 130 and no traceback).
``--set=field=value`` (repeatable, JSON values) applies to every run. Exit status 2 if any run
failed.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import sys

from absl import app, flags, logging
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # the configs package lives at the repository root

# pylint: disable-next=g-import-not-at-top
from golddiff_jax import metrics, outputs, run as run_lib, run_config

COLUMNS = ("name", "status", "overrides", "method", "num_images", "step_seconds_median",
           "compile_seconds_total", "sampling_seconds", "peak_memory_bytes", "mse_vs_baseline",
           "r2_vs_baseline")


def load_module(path: str, name: str, what: str = "file"):
  """Imports a Python file by path (relative paths: the working directory, then the repo root);
  ValueError ``<what> not found: <path>`` when there is none (also for experiments/table1.py)."""
  for candidate in (path, os.path.join(ROOT, path)):
    if os.path.isfile(candidate):
      spec = importlib.util.spec_from_file_location(name, candidate)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module
  raise ValueError(f"{what} not found: {path}")


def base_config(spec: str):
  path, _, arg = spec.partition(":")
  return load_module(path, "sweep_base_config").get_config(arg or None)


def apply_overrides(config, overrides: dict):
  """A locked copy of ``config`` with dotted-path ``overrides``; unknown fields raise ValueError."""
  config = config.copy_and_resolve_references()
  config.lock()
  for path, value in overrides.items():
    *parents, field = path.split(".")
    node = config
    try:
      for parent in parents:
        node = node[parent]
      node[field] = value
    except (KeyError, AttributeError, TypeError) as e:
      raise ValueError(f"bad override {path}={value!r}: {e}") from e
  return config


def run_name(overrides: dict) -> str:
  name = overrides.get("name") or ",".join(f"{k}={v}" for k, v in overrides.items()) or "base"
  return re.sub(r"[^A-Za-z0-9_.=,-]+", "_", str(name))


def _finished(run_dir: str, config) -> bool:
  """Whether ``run_dir`` holds a finished run of ``config``: its config.json equals ``config``
  and its metrics.json was written after it, for this config (its ``config_fingerprint``, when
  the runner records one), so an interrupted rerun beside an older run's metrics is not."""
  try:
    config_path, metrics_path = (os.path.join(run_dir, n) for n in ("config.json", "metrics.json"))
    with open(config_path) as f:
      saved = json.load(f)
    with open(metrics_path) as f:
      metrics = json.load(f)
    fingerprint = run_config.fingerprint(config)
    return (saved == json.loads(json.dumps(outputs.jsonable(config.to_dict())))
            and metrics.get("config_fingerprint", fingerprint) == fingerprint
            and os.path.getmtime(metrics_path) >= os.path.getmtime(config_path))
  except (OSError, ValueError):
    return False


def _row(name, overrides, run_dir, status) -> dict:
  row = {"name": name, "status": status,
         "overrides": " ".join(f"{k}={v}" for k, v in overrides.items() if k != "name")}
  try:
    with open(os.path.join(run_dir, "metrics.json")) as f:
      m = json.load(f)
  except (OSError, ValueError):
    return row
  row.update({k: m.get(k) for k in ("method", "num_images", "step_seconds_median",
                                    "compile_seconds_total", "sampling_seconds")})
  row["peak_memory_bytes"] = (m.get("peak_memory") or {}).get("bytes")
  return row


def run_sweep(study_path: str, workdir: str, *, sweep_arg: str | None = None,
              common: dict | None = None) -> list[dict]:
  """Runs (or resumes) a study; returns one result row per run and writes the CSV/Markdown."""
  study = load_module(study_path, "sweep_study")
  runs = study.get_sweep(sweep_arg) if sweep_arg is not None else study.get_sweep()
  base = base_config(study.BASE_CONFIG)
  names = [run_name(o) for o in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"run names must be unique, got {names}")
  cache = {"stats.cache_dir": os.path.join(os.path.abspath(workdir), "stats")} if (
      "stats" in base) else {}
  common = {**cache, **(common or {})}
  runner = getattr(study, "run", run_lib.run)
  configs = [apply_overrides(base, {**common, **{k: v for k, v in o.items() if k != "name"}})
             for o in runs]  # every override is checked before the first run starts
  rows = []
  try:
    for name, overrides, config in zip(names, runs, configs):
      run_dir = os.path.join(workdir, name)
      if _finished(run_dir, config):
        logging.info("sweep: %s finished earlier, skipping", name)
        rows.append(_row(name, overrides, run_dir, "done (resumed)"))
        continue
      logging.info("sweep: running %s", name)
      try:
        runner(config, run_dir)
        rows.append(_row(name, overrides, run_dir, "done"))
      except ValueError as e:
        logging.error("sweep: %s failed: %s", name, e)
        rows.append(_row(name, overrides, run_dir, f"failed: {' '.join(str(e).split())}"))
  except KeyboardInterrupt:  # the tables still show what finished; a rerun resumes
    rows += [{"name": n, "status": "interrupted"} for n in names[len(rows):]]
    raise
  finally:
    _compare(rows, workdir, getattr(study, "BASELINE", None))
    _write_tables(rows, workdir)
  return rows


def _compare(rows, workdir, baseline):
  """Fills mse_vs_baseline / r2_vs_baseline of the finished rows against the ``baseline`` run's
  final images (`golddiff_jax.metrics.compare`); a run whose samples are missing or of another
  shape than the baseline's is left blank (with a warning), never an error."""
  if baseline is None or not any(r["name"] == baseline and r["status"].startswith("done")
                                  for r in rows):
    return
  def final(name):
    with np.load(os.path.join(workdir, name, "samples.npz")) as f:
      return f["images"]
  try:
    base = final(baseline)
  except (OSError, KeyError, ValueError):
    return
  for row in rows:
    if not row["status"].startswith("done"):
      continue
    try:
      images = final(row["name"])
    except (OSError, KeyError, ValueError) as e:
      logging.warning("sweep: %s: no samples to compare (%s)", row["name"], e)
      continue
    if images.shape != base.shape:
      logging.warning("sweep: %s: samples %s differ in shape from the baseline's %s; not "
                      "compared", row["name"], images.shape, base.shape)
      continue
    try:
      scores = metrics.compare(images, base)  # docs/method.md §8.4
    except ValueError as e:  # e.g. NaN samples: left blank, as above
      logging.warning("sweep: %s: not compared (%s)", row["name"], e)
      continue
    row["mse_vs_baseline"], row["r2_vs_baseline"] = scores["mse"], scores["r2"]


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return "" if value is None else str(value)


def _write_tables(rows, workdir):
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
  writer.writeheader()
  writer.writerows([{k: row.get(k) for k in COLUMNS} for row in rows])
  outputs.atomic_write(os.path.join(workdir, "results.csv"),
                       lambda f: f.write(buffer.getvalue()), mode="w")
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(_fmt(row.get(k)).replace("|", "/") for k in COLUMNS) + " |"
            for row in rows]
  outputs.atomic_write(os.path.join(workdir, "results.md"),
                       lambda f: f.write("\n".join(lines) + "\n"), mode="w")


def _parse_set(items) -> dict:
  common = {}
  for item in items:
    key, _, value = item.partition("=")
    try:
      common[key] = json.loads(value)
    except ValueError:
      common[key] = value
  return common


def main(argv):
  del argv
  sweep, workdir = flags.FLAGS.sweep, flags.FLAGS.workdir
  if not sweep or not workdir:
    print("error: --sweep and --workdir are required", file=sys.stderr)
    sys.exit(2)
  from golddiff_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  import jax  # pylint: disable=g-import-not-at-top
  if not jax.config.jax_compilation_cache_dir:  # runs and reruns share compiled steps
    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
  try:
    rows = run_sweep(sweep, workdir, sweep_arg=flags.FLAGS.sweep_arg,
                     common=_parse_set(flags.FLAGS.set))
  except ValueError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print(f"\ninterrupted: the finished runs are in {workdir}/results.md; rerun the same "
          f"command to resume", file=sys.stderr)
    sys.exit(130)
  with open(os.path.join(workdir, "results.md")) as f:
    print(f.read())
  sys.exit(2 if any(r["status"].startswith("failed") for r in rows) else 0)


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import this module next to the launcher.
  flags.DEFINE_string("sweep", None, "Study file (experiments/sweeps/<study>.py).")
  flags.DEFINE_string("workdir", None, "Directory holding one folder per run.")
  flags.DEFINE_string("sweep_arg", None, "String passed to the study's get_sweep(arg).")
  flags.DEFINE_multi_string("set", [], "field=value applied to every run (JSON values).")
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.config_with_absl()
  app.run(main)
