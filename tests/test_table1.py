"""experiments/table1.py end to end on a tiny config (all methods, every output file, scores that
the metrics module reproduces), and clean errors with nothing written.

The default run uses a stand-in reference (the Wiener sampler on other images, patched into
`golddiff_jax.models.reference`) so the protocol is checked in seconds; the ``slow`` tests train a
tiny U-Net for two steps and run the real reference path, including the wrong-shape CLI error.
"""

import csv
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
from PIL import Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import golddiff_jax as gd  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax import metrics, stats_cache  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax.data import procedural_images  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax.models import reference  # noqa: E402  pylint: disable=g-import-not-at-top
import table1  # noqa: E402  pylint: disable=g-import-not-at-top

DATA = {"data.dataset": "procedural", "data.num_images": 24, "data.resolution": 8}
OVERRIDES = {**DATA, "golden.low_res_dim": 4, "golden.k_min": None, "golden.k_max": None}
SAMPLES, STEPS, BATCH = 5, 2, 2


def _make_table(data_dir, reference_dir, output_dir, **kwargs):
  return table1.make_table("configs/procedural.py", reference_dir, output_dir,
                           overrides={**OVERRIDES, "data.data_dir": data_dir},
                           num_samples=SAMPLES, batch_size=BATCH, num_steps=STEPS,
                           grid_samples=4, **kwargs)


def _stand_in_sample(model, latents, num_steps=10):
  return gd.sample(model.stats, latents, method="wiener", num_steps=num_steps)


@pytest.fixture(scope="module")
def stand_in_table(tmp_path_factory, data_dir):
  def load(checkpoint_dir, *, image_shape=None):
    if not os.path.isdir(checkpoint_dir):
      raise ValueError(f"no reference checkpoint in {checkpoint_dir!r}")
    return types.SimpleNamespace(step=0, stats=gd.fit(procedural_images(30, *image_shape,
                                                                         seed=5)))
  ref_dir = str(tmp_path_factory.mktemp("stand_in"))
  output_dir = str(tmp_path_factory.mktemp("table") / "out")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(reference, "load_reference", load)
    patch.setattr(reference, "sample", _stand_in_sample)
    results = _make_table(data_dir, ref_dir, output_dir)
    ref_model = load(ref_dir, image_shape=(8, 8, 3))
  return output_dir, results, ref_model


def check_outputs(output_dir: str) -> dict:
  """Every file, every method in table.md / table.csv / metrics.json; returns metrics.json."""
  assert sorted(os.listdir(output_dir)) == sorted(
      ["metrics.json", "samples.png", "stats", "table.csv", "table.md"])
  with open(os.path.join(output_dir, "table.md")) as f:
    text = f.read()
  for name in [*gd.METHODS, "reference"]:
    assert f"| {name} |" in text
  with open(os.path.join(output_dir, "table.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == [*gd.METHODS, "reference"]
  assert rows[-1]["mse"] == "" and all(float(r["seconds_per_step"]) > 0 for r in rows)
  with open(os.path.join(output_dir, "metrics.json")) as f:
    saved = json.load(f)
  assert sorted(saved["methods"]) == sorted(gd.METHODS)
  setup = saved["setup"]
  assert (setup["num_samples"], setup["batch_size"], setup["num_steps"]) == (SAMPLES, BATCH,
                                                                           STEPS)
  assert setup["timesteps"] == [500, 0]
  for m in gd.METHODS:
    entry = saved["methods"][m]
    assert len(entry["scores"]["r2_per_step"]) == STEPS
    assert entry["scores"]["r2"] == entry["scores"]["r2_per_step"][-1]
    timing = entry["timing"]
    assert timing["num_batches"] == 3 and len(timing["step_seconds"]) == 3
    assert timing["published_style_seconds_per_batch_step"] == pytest.approx(
        timing["wall_seconds"] / (3 * STEPS))
    assert len(entry["memorization"]["ratio"]) == SAMPLES
  png = Image.open(os.path.join(output_dir, "samples.png"))
  assert png.size[1] >= 5 * 2 * 8  # five rows (4 methods + reference), zoomed ≥ 2×
  assert not [n for n in os.listdir(output_dir) if n.startswith(".")]  # no temp files
  return saved


def test_writes_every_output_with_every_method(stand_in_table):
  saved = check_outputs(stand_in_table[0])
  # Each baseline keeps its own dataset settings (configs/procedural.py:method=pca_locality).
  assert saved["methods"]["pca_locality"]["options"]["mask_threshold"] == 0.05
  assert saved["methods"]["golddiff"]["options"]["mask_threshold"] == 0.03


def test_scores_are_the_metrics_of_runs_from_the_same_latents(stand_in_table, data_dir):
  output_dir, results, ref_model = stand_in_table
  config = table1.method_config("configs/procedural.py", {**OVERRIDES, "data.data_dir": data_dir},
                                "wiener", num_samples=SAMPLES, batch_size=BATCH,
                                num_steps=STEPS, seed=None)
  stats, info = stats_cache.for_experiment(config, output_dir)
  assert info["stats_cached"]
  noise_key, _ = jax.random.split(jax.random.key(config.seed))
  latents = gd.noise(noise_key, SAMPLES, stats.image_shape)
  ref = _stand_in_sample(ref_model, latents, num_steps=STEPS)
  options = results["methods"]["wiener"]["options"]
  out = gd.sample(stats, latents, method="wiener", num_steps=STEPS, **options)  # deterministic
  got = results["methods"]["wiener"]["scores"]
  want = metrics.trajectory_metrics(out.x0_trajectory, ref.x0_trajectory)
  for name in ("mse", "r2", "l1"):
    np.testing.assert_allclose(got[f"{name}_per_step"], want[f"{name}_per_step"], rtol=1e-5,
                               atol=1e-7)
  mem = results["methods"]["optimal"]["memorization"]
  assert mem["fraction_memorized"] == pytest.approx(np.mean(np.asarray(mem["ratio"]) < 1 / 3))
  assert results["reference"]["memorization"]["threshold"] == pytest.approx(1 / 3)


def test_bad_inputs_raise_before_anything_is_written(tmp_path, data_dir):
  out = str(tmp_path / "table")
  ref_dir = str(tmp_path)
  with pytest.raises(ValueError, match="unknown method 'nope'"):
    _make_table(data_dir, ref_dir, out, methods=["optimal", "nope"])
  with pytest.raises(ValueError, match="each method once"):
    _make_table(data_dir, ref_dir, out, methods=["wiener", "wiener"])
  with pytest.raises(ValueError, match="num_samples must be >= 1"):
    table1.make_table("configs/procedural.py", ref_dir, out, overrides=OVERRIDES, num_samples=0)
  with pytest.raises(ValueError, match="does not exist|no .*checkpoint"):
    _make_table(data_dir, str(tmp_path / "missing"), out)
  assert not os.path.exists(out)


def _cli(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "table1.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_flag_errors_are_one_line(tmp_path):
  out = tmp_path / "table"
  for flag, message in (("--num_samples=0", "num_samples"), ("--methods=optimal,nope", "nope")):
    proc = _cli("--config=configs/procedural.py", f"--reference={tmp_path}", f"--output_dir={out}",
                flag)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in proc.stderr
  assert not out.exists()


# ----------------------------------------------------------------------------------------------
# The real reference network (slow: trains a tiny U-Net)
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, data_dir):
  """A tiny U-Net trained for two steps on the same images as the analytical database."""
  from configs.train import default as train_default  # pylint: disable=g-import-not-at-top
  from golddiff_jax.models import train  # pylint: disable=g-import-not-at-top
  config = train_default.get_config()
  config.data.update_from_flattened_dict({k.split(".", 1)[1]: v for k, v in DATA.items()})
  config.data.data_dir = data_dir
  config.model.update(ch=8, ch_mult=(1,), num_res_blocks=1, num_groups=4, dropout=0.0)
  config.train.update(batch_size=8, num_steps=2, warmup_steps=1, log_every=1,
                      checkpoint_every=2)
  config.mesh.data = 1
  workdir = str(tmp_path_factory.mktemp("reference"))
  train.train(config, workdir)
  return workdir


@pytest.mark.slow
def test_trained_reference_end_to_end(reference_dir, data_dir, tmp_path):
  output_dir = str(tmp_path / "out")
  results = _make_table(data_dir, reference_dir, output_dir)
  saved = check_outputs(output_dir)
  assert saved["setup"]["reference_step"] == 2
  assert saved["setup"]["reference_training_data"]["matches_database"]
  ref = reference.sample(reference.load_reference(reference_dir),
                         gd.noise(jax.random.split(jax.random.key(7))[0], SAMPLES, (8, 8, 3)),
                         num_steps=STEPS)
  config = table1.method_config("configs/procedural.py", {**OVERRIDES, "data.data_dir": data_dir},
                                "wiener", num_samples=SAMPLES, batch_size=BATCH,
                                num_steps=STEPS, seed=None)
  stats, _ = stats_cache.for_experiment(config, output_dir)
  out = gd.sample(stats, gd.noise(jax.random.split(jax.random.key(7))[0], SAMPLES, (8, 8, 3)),
                  method="wiener", num_steps=STEPS, **results["methods"]["wiener"]["options"])
  assert results["methods"]["wiener"]["scores"]["r2"] == pytest.approx(
      metrics.r2(out.images, ref.images), rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_wrong_shape_reference_is_a_clean_error_with_nothing_written(reference_dir, data_dir,
                                                                     tmp_path):
  out = tmp_path / "table"
  overrides = {**OVERRIDES, "data.resolution": 4, "data.data_dir": data_dir,
               "golden.k_min": 2, "golden.k_max": 4}
  proc = _cli("--config=configs/procedural.py", f"--reference={reference_dir}",
              f"--output_dir={out}", "--num_samples=2",
              *[f"--config.{k}={v}" for k, v in overrides.items()])
  assert proc.returncode == 2, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "8×8×3" in last and "4×4×3" in last
  assert "Traceback" not in proc.stderr
  assert not out.exists()


def test_mask_variant_rows_reload_the_config_with_that_mask(data_dir):
  overrides = {**OVERRIDES, "data.data_dir": data_dir}
  kwargs = dict(num_samples=SAMPLES, batch_size=BATCH, num_steps=STEPS, seed=None)
  published = table1.method_config("configs/default.py", overrides, "pca_locality@published",
                                   **kwargs)
  assert published.method == "pca_locality"
  assert published.denoiser.eig_floor == 0.0 and published.denoiser.mask_threshold == 0.005
  floor = table1.method_config("configs/default.py", overrides, "golddiff@floor", **kwargs)
  assert floor.method == "golddiff" and floor.denoiser.diag_floor > 0
  with pytest.raises(ValueError, match="unknown mask variant"):
    table1.method_config("configs/default.py", overrides, "golddiff@nope", **kwargs)
