"""End to end: `run(config, workdir)` and the absl launcher on tiny configs (outputs, stats cache,
corrupt cache, clean one-line errors with nothing half-written)."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from golddiff_jax import METHODS, run as run_lib, stats_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import procedural  # noqa: E402  pylint: disable=g-import-not-at-top

OUTPUTS = ("config.json", "samples.npz", "grid.png", "trajectory.png", "metrics.json", "log.txt")
TINY = {"data.num_images": 48, "data.resolution": 8, "golden.low_res_dim": 4,
        "golden.k_min": None, "golden.k_max": None, "sampler.num_samples": 3,
        "sampler.batch_size": 2, "sampler.num_steps": 2, "diagnostics.num_samples": 2,
        "output.trajectory_samples": 2}


def tiny_config(data_dir, method="pca_locality", **changes):
  config = procedural.get_config()
  config.update_from_flattened_dict({**TINY, "data.data_dir": data_dir, "method": method,
                                     **changes})
  return config


def test_run_writes_every_output_and_reuses_the_cache(data_dir, tmp_path):
  workdir = str(tmp_path / "wd")
  metrics = run_lib.run(tiny_config(data_dir), workdir)
  for name in OUTPUTS:
    assert os.path.exists(os.path.join(workdir, name)), name
  assert not [n for n in os.listdir(workdir) if n.startswith(".")]  # no temp files left
  with np.load(os.path.join(workdir, "samples.npz")) as f:
    assert f["images"].shape == (3, 8, 8, 3)
    assert f["x0_trajectory"].shape == (2, 3, 8, 8, 3)
    assert f["latents"].shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(f["timesteps"], [500, 0])
    np.testing.assert_array_equal(f["x0_trajectory"][-1], f["images"])
  with open(os.path.join(workdir, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["num_batches"] == 2 and len(saved["step_seconds"][0]) == 2
  assert saved["prepare_seconds"] > 0  # once per run (batches of 2 and 1: both sizes' plans)
  assert saved["peak_memory"]["bytes"] > 0 and "RSS" in saved["peak_memory"]["source"]
  assert not saved["stats_cached"] and metrics["num_images"] == 48
  assert len(saved["posterior_support"]["support_mean"]) == 2  # diagnostics.trajectory_support
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["sampler"]["num_samples"] == 3
  assert Image.open(os.path.join(workdir, "grid.png")).size[0] > 8

  again = run_lib.run(tiny_config(data_dir), workdir)
  assert again["stats_cached"]
  with np.load(os.path.join(workdir, "samples.npz")) as f:
    first = f["images"]
  np.testing.assert_array_equal(first, np.load(os.path.join(workdir, "samples.npz"))["images"])


def test_corrupt_stats_cache_is_recomputed(data_dir, tmp_path):
  workdir = str(tmp_path / "wd")
  first = run_lib.run(tiny_config(data_dir, "optimal"), workdir)
  with open(first["stats_path"], "wb") as f:
    f.write(b"not an npz file")
  second = run_lib.run(tiny_config(data_dir, "optimal"), workdir)
  assert not second["stats_cached"]
  third = run_lib.run(tiny_config(data_dir, "optimal"), workdir)
  assert third["stats_cached"]


def test_moons_run_draws_scatter_plots(data_dir, tmp_path):
  config = tiny_config(data_dir, "optimal", **{"data.dataset": "moons", "data.resolution": None,
                                               "data.num_images": 200})
  run_lib.run(config, str(tmp_path))
  assert Image.open(tmp_path / "grid.png").size == (256, 256)


@pytest.mark.parametrize("changes,message", [
    ({"golden.k_min": 9, "golden.k_max": 3}, "k_min=9 must be <="),
    ({"sampler.num_samples": -2}, "num_samples must be >= 1"),
    ({"data.dataset": "svhn"}, "unknown dataset"),
    ({"method": "magic"}, "unknown method"),
])
def test_bad_config_writes_nothing(data_dir, tmp_path, changes, message):
  workdir = tmp_path / "wd"
  with pytest.raises(ValueError, match=message):
    run_lib.run(tiny_config(data_dir, **changes), str(workdir))
  assert not workdir.exists()


def _launch(args, timeout=300):
  return subprocess.run([sys.executable, "-m", "golddiff_jax.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _flags(data_dir):
  return [f"--config.{k}={v}" for k, v in TINY.items() if v is not None] + [
      f"--config.data.data_dir={data_dir}"]


def test_launcher_one_step_end_to_end(data_dir, cache_dir, tmp_path):
  method = "golddiff" if "golddiff" in METHODS else "pca_locality"
  run_lib.run(tiny_config(data_dir, "wiener", **{"stats.cache_dir": cache_dir}),
              str(tmp_path / "fit"))  # fills the cache: the launcher skips TF and the fit
  workdir = tmp_path / "wd"
  args = ["--config=configs/procedural.py", f"--workdir={workdir}", *_flags(data_dir),
          f"--config.method={method}", "--config.sampler.num_steps=1",
          "--config.golden.k_min=2", "--config.golden.k_max=5", "--jax_platforms=cpu",
          f"--config.stats.cache_dir={cache_dir}"]
  result = _launch(args)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in OUTPUTS:
    assert (workdir / name).exists(), name
  with np.load(workdir / "samples.npz") as f:
    assert f["x0_trajectory"].shape == (1, 3, 8, 8, 3)
  with open(workdir / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["method"] == method and metrics["num_steps"] == 1
  if method == "golddiff":
    assert metrics["golden_budgets"][0]["k"] in range(2, 6)
  assert "JAX process 0 / 1" in result.stderr and metrics["stats_cached"]


@pytest.mark.parametrize("args,message", [
    (["--config=configs/missing.py"], "No such file"),
    (["--config=configs/procedural.py", "--config.golden.k_min=500"], "k_min=500 must be <="),
    (["--config=configs/procedural.py", "--config.nope=1"], "unknown config field 'nope'"),
    (["--config=configs/procedural.py", "--config.data.dataset=afhq",
      "--config.data.manual_dir=/nonexistent/afhq"], "manual download"),
])
def test_launcher_bad_input_is_one_clean_line(data_dir, tmp_path, args, message):
  workdir = tmp_path / "wd"
  extra = [f"--config.data.data_dir={data_dir}"] if "configs/procedural.py" in args[0] else []
  result = _launch([*args, f"--workdir={workdir}", *extra])
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  for name in OUTPUTS[:-1]:
    assert not (workdir / name).exists()


def test_unwritable_workdir(data_dir, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="not writable"):
    run_lib.run(tiny_config(data_dir), str(blocker / "wd"))


def test_global_statistics_with_a_class_database(data_dir, tmp_path):
  """docs/method.md §7.4: the database is one class, μ/λ/V are those of the whole split."""
  from golddiff_jax import data  # pylint: disable=g-import-not-at-top
  changes = {"data.dataset": "moons", "data.resolution": None, "data.num_images": 60,
             "data.class_id": 1, "stats.source": "global", "stats.global_subset_size": 60}
  stats, info = stats_cache.for_experiment(tiny_config(data_dir, "optimal", **changes),
                                           str(tmp_path))
  everything_config = tiny_config(data_dir, **changes).data
  everything_config.class_id = None
  whole = data.load_images(everything_config)
  everything = whole.images.reshape(len(whole.images), -1)
  assert "global60" in info["stats_path"] and "class1" in info["stats_path"]
  np.testing.assert_allclose(np.asarray(stats.mean), everything.mean(0), atol=1e-6)
  assert stats.num_images == 30  # half of the moons are class 1


def test_reported_golddiff_budgets_are_the_plans(data_dir, cache_dir, tmp_path):
  """metrics.json's golden_budgets are the m_t, k_t the sampler's plans use (method defaults for
  the config fields left None)."""
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir, "golddiff", **{"stats.cache_dir": cache_dir,
                                                "sampler.num_samples": 2,
                                                "sampler.num_steps": 5,
                                                "diagnostics.num_samples": 0})
  metrics = run_lib.run(config, str(tmp_path / "wd"))
  stats, _ = stats_cache.fit_or_load(config)
  prepared = gd.prepare(stats, method="golddiff", num_steps=5, batch=2, **metrics["options"])
  assert metrics["golden_budgets"] == [{"t": int(t), "m": int(p.m), "k": int(p.k),
                                        "expansion": p.expansion is not None}
                                       for t, p in zip(prepared.timesteps, prepared.plans)]
  # t = 800 (ᾱ ≤ 0.002) uses the high-noise expansion, the later steps retrieve.
  assert [b["expansion"] for b in metrics["golden_budgets"]] == [True] + [False] * 4

  assert len({b["m"] for b in metrics["golden_budgets"]}) > 1  # dynamic_m: the default


def test_run_on_a_batch_by_data_mesh_matches_one_device(data_dir, cache_dir, tmp_path):
  """The launcher shards the database over config.mesh (8 fake devices): same samples."""
  changes = {"stats.cache_dir": cache_dir, "sampler.num_samples": 4, "sampler.batch_size": 4,
             "diagnostics.num_samples": 0}
  sharded = run_lib.run(tiny_config(data_dir, "golddiff", **changes, **{"mesh.data": 4,
                                                                       "mesh.batch": 2}),
                        str(tmp_path / "sharded"))
  single = run_lib.run(tiny_config(data_dir, "golddiff", **changes, **{"mesh.data": 1}),
                       str(tmp_path / "single"))
  assert sharded["mesh"] == {"batch": 2, "data": 4} and single["mesh"] == {"batch": 1, "data": 1}
  with np.load(str(tmp_path / "sharded" / "samples.npz")) as a, np.load(
      str(tmp_path / "single" / "samples.npz")) as b:
    diff = np.linalg.norm(a["x0_trajectory"] - b["x0_trajectory"])
    assert diff <= 1e-4 * np.linalg.norm(b["x0_trajectory"])


def test_wssm_runs_unsharded_unless_a_mesh_is_forced(data_dir, cache_dir, tmp_path):
  changes = {"stats.cache_dir": cache_dir, "denoiser.softmax": "wssm",
             "diagnostics.num_samples": 0}
  metrics = run_lib.run(tiny_config(data_dir, **changes), str(tmp_path / "auto"))
  assert metrics["mesh"] is None
  with pytest.raises(ValueError, match="wssm' cannot be sharded"):
    run_lib.run(tiny_config(data_dir, **changes, **{"mesh.data": 2}), str(tmp_path / "forced"))
