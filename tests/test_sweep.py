"""The sweep runner: a two-run study with resume, and the shipped ablation study's overrides."""

import csv
import importlib.util
import os
import sys

import pytest

from golddiff_jax import METHODS, run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path, name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep = _load("experiments/sweep.py", "sweep_under_test")

STUDY = '''
BASE_CONFIG = "configs/procedural.py:n=40,samples=2,steps=2"
BASELINE = "exact"

def get_sweep(arg=None):
  return [{"name": "exact", "method": "optimal"},
          {"name": "local", "method": "pca_locality", "denoiser.mask_threshold": 0.1}]
'''


def test_two_run_study_with_resume(data_dir, tmp_path):
  study = tmp_path / "study.py"
  study.write_text(STUDY)
  workdir = tmp_path / "sweep"
  common = {"data.resolution": 8, "data.data_dir": data_dir, "sampler.batch_size": 2}
  rows = sweep.run_sweep(str(study), str(workdir), common=common)
  assert [r["status"] for r in rows] == ["done", "done"]
  assert rows[0]["mse_vs_baseline"] == 0.0 and rows[0]["r2_vs_baseline"] == 1.0
  assert rows[1]["mse_vs_baseline"] > 0.0
  for name in ("exact", "local"):
    assert (workdir / name / "metrics.json").exists()
  assert os.listdir(workdir / "stats")  # one shared stats cache for the study
  with open(workdir / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["name"] for r in table] == ["exact", "local"]
  assert table[1]["method"] == "pca_locality" and float(table[1]["step_seconds_median"]) > 0
  assert (workdir / "results.md").read_text().count("\n") == 4

  stamp = os.path.getmtime(workdir / "exact" / "metrics.json")
  os.remove(workdir / "local" / "metrics.json")  # as if interrupted during the second run
  rows = sweep.run_sweep(str(study), str(workdir), common=common)
  assert [r["status"] for r in rows] == ["done (resumed)", "done"]
  assert os.path.getmtime(workdir / "exact" / "metrics.json") == stamp
  rows = sweep.run_sweep(str(study), str(workdir), common={**common, "sampler.num_steps": 1})
  assert [r["status"] for r in rows] == ["done", "done"]  # a changed config reruns


def test_failed_run_is_reported_and_the_sweep_continues(data_dir, tmp_path):
  study = tmp_path / "study.py"
  study.write_text(STUDY.replace('"denoiser.mask_threshold": 0.1', '"golden.k_min": 0'))
  rows = sweep.run_sweep(str(study), str(tmp_path / "sweep"),
                         common={"data.resolution": 8, "data.data_dir": data_dir})
  assert rows[0]["status"] == "done"
  assert rows[1]["status"].startswith("failed: golden.k_min must be a positive int")


def test_bad_override_names_the_field(tmp_path):
  study = tmp_path / "study.py"
  study.write_text(STUDY.replace('"method": "optimal"', '"golden.k_mn": 3'))
  with pytest.raises(ValueError, match="golden.k_mn"):
    sweep.run_sweep(str(study), str(tmp_path / "sweep"))


def test_ablation_study_overrides_are_valid():
  study = _load("experiments/sweeps/ablations.py", "ablations_under_test")
  base = sweep.base_config(study.BASE_CONFIG)
  runs = study.get_sweep()
  assert study.BASELINE in [r["name"] for r in runs]
  assert len(study.get_sweep("quick")) < len(runs)
  for overrides in runs:
    config = sweep.apply_overrides(base, {k: v for k, v in overrides.items() if k != "name"})
    if config.method in METHODS:
      run_config.validate(config)
