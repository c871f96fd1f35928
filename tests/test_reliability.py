"""What a new user runs into: interrupted reruns, filesystem errors, batch-size independence, the
stats cache, validation gaps, offline data, progress output and the sweep's bookkeeping."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golddiff_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(args, timeout=300):
  return subprocess.run([sys.executable, "-m", "golddiff_jax.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _error_line(result) -> str:
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, result.stderr[-2000:]
  return lines[0]


# ---- command line -----------------------------------------------------------------------------

def test_none_overrides_are_split_off_and_set():
  argv, nones = cli._split_none_overrides(
      ["prog", "--config=c.py", "--config.golden.k_min=None", "--config.seed=3",
       "--other=None", "--config.x=Nonesuch"], "config")
  assert argv == ["prog", "--config=c.py", "--config.seed=3", "--other=None",
                  "--config.x=Nonesuch"]
  assert nones == ["golden.k_min"]
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"golden": {"k_min": common.optional(int, 100)}, "seed": 7})
  config.lock()
  cli._set_none(config, "golden.k_min")
  cli._set_none(config, "seed")  # a plain int field: None reaches validation, which names it
  assert config.golden.k_min is None and config.seed is None
  with pytest.raises(KeyError):
    cli._set_none(config, "golden.kmin")
  with pytest.raises(ValueError, match="is a section"):
    cli._set_none(config, "golden")


def test_unknown_field_message_is_plain_text():
  error = AttributeError(KeyError('\'kmin\'\nDid you mean "k_min" instead of "kmin"?'))
  assert cli.unknown_field_message(error) == (
      "unknown config field 'kmin' in a --config override (did you mean 'k_min'?)")
  assert cli.unknown_field_message(KeyError("'nope'")) == (
      "unknown config field 'nope' in a --config override")


def test_launcher_accepts_none_and_reports_misspelled_fields(tmp_path):
  # k_min=None parses (None means automatic); the bad num_samples then stops the run up front.
  line = _error_line(_launch(["--config=configs/default.py", f"--workdir={tmp_path / 'a'}",
                              "--config.golden.k_min=None", "--config.sampler.num_samples=0"]))
  assert "sampler.num_samples must be >= 1" in line
  line = _error_line(_launch(["--config=configs/default.py", f"--workdir={tmp_path / 'b'}",
                              "--config.golden.kmin=3"]))
  assert line == ("error: unknown config field 'kmin' in a --config override "
                  "(did you mean 'k_min'?)")
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---- the API boundary -------------------------------------------------------------------------

def _tiny_stats():
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import procedural_images  # pylint: disable=g-import-not-at-top
  return gd.fit(procedural_images(24, 4, 4, 3, seed=3))


def test_api_accepts_numpy_and_jax_scalars_and_bfloat16():
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  import reference as ref  # pylint: disable=g-import-not-at-top
  stats = _tiny_stats()
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
  want = ref.optimal(np.asarray(stats.database, np.float64), x.reshape(2, -1), ref.ABAR[300])
  for t in (300, np.int64(300), jnp.int32(300), jnp.asarray(300)):
    got = gd.denoise(stats, x, t, method="optimal", temperature=np.float32(1.0))
    np.testing.assert_allclose(np.asarray(got).reshape(2, -1), want, rtol=1e-4, atol=1e-5)
  low = jnp.asarray(x, jnp.bfloat16)
  got = gd.denoise(stats, low, 300, method="optimal")
  want = ref.optimal(np.asarray(stats.database, np.float64),
                     np.asarray(low, np.float64).reshape(2, -1), ref.ABAR[300])
  np.testing.assert_allclose(np.asarray(got).reshape(2, -1), want, rtol=1e-4, atol=1e-5)
  out = gd.sample(stats, x, method="pca_locality", num_steps=1,
                  mask_threshold=np.float32(0.05), temperature=jnp.float32(1.0))
  assert np.all(np.isfinite(out.images))


@pytest.mark.parametrize("kwargs,message", [
    ({"key": 3}, r"key must be a PRNG key from jax.random.key\(seed\).*got int 3"),
    ({"key": np.zeros(5, np.uint32)}, "one per sample"),
    ({"temperature": float("inf")}, "temperature must be a positive number"),
    ({"temperature": np.float32("nan")}, "temperature must be a positive number"),
    ({"t": jnp.float32(3.0)}, "t must be an int"),
    ({"t": True}, "t must be an int"),
])
def test_api_bad_scalars_and_keys(kwargs, message):
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  x = np.zeros((2, 4, 4, 3), np.float32)
  kwargs = {"t": 300, **kwargs}
  with pytest.raises(ValueError, match=message):
    gd.denoise(_tiny_stats(), x, kwargs.pop("t"), method="optimal", **kwargs)


@pytest.mark.parametrize("theta,why", [(1.0, "θ >= 1 would keep only the largest entries"),
                                       (0.0, "θ <= 0 would keep every entry"),
                                       ("x", "a fraction of the largest entry")])
def test_mask_threshold_message_says_why(theta, why):
  from golddiff_jax import validation  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=why):
    validation.check_mask_threshold(theta)
  validation.check_mask_threshold(np.float32(0.5))


def test_raw_and_per_sample_keys():
  """A raw uint32 key equals its typed form; per-sample keys give each sample its own draw,
  whatever batch it is in."""
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import procedural_images  # pylint: disable=g-import-not-at-top
  stats = gd.fit(procedural_images(60, 4, 4, 3, seed=5))
  x = np.asarray(gd.noise(jax.random.key(1), 4, stats.image_shape))
  opts = dict(method="golddiff", k_min=3, k_max=6, low_res_dim=2, mask_threshold=0.05)
  typed = gd.denoise(stats, x, 600, key=jax.random.key(9), **opts)
  raw = gd.denoise(stats, x, 600, key=jax.random.PRNGKey(9), **opts)
  np.testing.assert_array_equal(np.asarray(typed), np.asarray(raw))
  base = jax.random.key(4)
  whole = np.asarray(gd.denoise(stats, x, 600, key=gd.sample_keys(base, 0, 4), **opts))
  parts = [np.asarray(gd.denoise(stats, x[i:i + 2], 600, key=gd.sample_keys(base, i, 2), **opts))
           for i in (0, 2)]
  np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5, atol=1e-6)
  other = np.asarray(gd.denoise(stats, x, 600, key=gd.sample_keys(base, 4, 4), **opts))
  assert not np.allclose(other, whole)  # the keys matter (t = 600: a random pool m_t < N)


# ---- runs -------------------------------------------------------------------------------------

TINY = {"data.dataset": "procedural", "data.num_images": 48, "data.resolution": 8,
        "data.subset_size": None, "golden.low_res_dim": 4, "golden.k_min": 3,
        "golden.k_max": 6, "sampler.num_samples": 4, "sampler.batch_size": 2,
        "sampler.num_steps": 2, "diagnostics.num_samples": 0, "output.trajectory_samples": 2,
        "mesh.data": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("stats"))


def tiny_config(data_dir, method="golddiff", **changes):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  for path, value in {**TINY, "data.data_dir": data_dir, "method": method, **changes}.items():
    *parents, field = path.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  return config


@pytest.mark.slow  # three small runs (~50 s on 2 cores); test_raw_and_per_sample_keys is the fast form
def test_golddiff_samples_do_not_depend_on_the_batch_size(data_dir, cache_dir, tmp_path):
  from golddiff_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  finals = {}
  for batch in (1, 4):
    workdir = tmp_path / f"b{batch}"
    run_lib.run(tiny_config(data_dir, **{"sampler.batch_size": batch,
                                         "stats.cache_dir": cache_dir}), str(workdir))
    with np.load(workdir / "samples.npz") as f:
      finals[batch] = f["x0_trajectory"]
  np.testing.assert_allclose(finals[1], finals[4], rtol=1e-4, atol=1e-5)
  again = tmp_path / "seed"
  run_lib.run(tiny_config(data_dir, **{"seed": 8, "stats.cache_dir": cache_dir}), str(again))
  with np.load(again / "samples.npz") as f:
    assert not np.allclose(f["x0_trajectory"], finals[4])


def test_config_temperature_inf_and_impossible_mesh_are_caught_up_front(data_dir, tmp_path,
                                                                         monkeypatch):
  from golddiff_jax import run as run_lib, run_config  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="denoiser.temperature must be a positive number"):
    run_config.validate(tiny_config(data_dir, **{"denoiser.temperature": float("inf")}))
  workdir = tmp_path / "wd"
  with pytest.raises(ValueError, match="mesh.data=3, mesh.batch=3: .*needs 9 devices; 8"):
    run_lib.run(tiny_config(data_dir, **{"mesh.data": 3, "mesh.batch": 3,
                                         "sampler.batch_size": 3, "sampler.num_samples": 3}),
                str(workdir))
  one = jax.devices()[:1]
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  monkeypatch.setattr(jax, "devices", lambda *a: one)
  with pytest.raises(ValueError, match="mesh.data=3, mesh.batch=1: .*needs 3 devices; 1"):
    run_lib.run(tiny_config(data_dir, **{"mesh.data": 3}), str(workdir))
  assert run_lib.run_mesh(tiny_config(data_dir, **{"mesh.data": -1})) is None
  assert not workdir.exists()
