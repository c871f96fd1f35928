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


def _load_sweep():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("sweep_for_reliability",
                                                os.path.join(ROOT, "experiments", "sweep.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep_module = _load_sweep()


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
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"golden": {"k_min": 1}})
  config.lock()
  try:
    config.golden.kmin = 3
  except (AttributeError, KeyError) as e:  # what ml_collections raises for an unknown field
    error = e
  assert cli.unknown_field_message(error) == (
      "unknown config field 'kmin' in a --config override (did you mean 'k_min'?)")
  assert cli.unknown_field_message(AttributeError(KeyError("'nope'"))) == (
      "unknown config field 'nope' in a --config override")


def test_launcher_accepts_none(tmp_path):
  # k_min=None parses (None means automatic); the bad num_samples then stops the run up front.
  line = _error_line(_launch(["--config=configs/default.py", f"--workdir={tmp_path / 'a'}",
                              "--config.golden.k_min=None", "--config.sampler.num_samples=0"]))
  assert "sampler.num_samples must be >= 1" in line
  assert not (tmp_path / "a").exists()


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


def tiny_config(data_dir, method="golddiff", **changes):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update_from_flattened_dict({**TINY, "data.data_dir": data_dir, "method": method,
                                     **changes})
  return config


@pytest.mark.slow  # three small runs (~40 s on 2 cores); test_raw_and_per_sample_keys: fast form
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


# ---- interrupted reruns -----------------------------------------------------------------------

def _json(path):
  with open(path) as f:
    return json.load(f)


def test_an_interrupted_rerun_never_looks_finished(data_dir, cache_dir, tmp_path, monkeypatch):
  from golddiff_jax import run as run_lib, run_config  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "wd"
  first = tiny_config(data_dir, "wiener", **{"stats.cache_dir": cache_dir})
  run_lib.run(first, str(workdir))
  assert _json(workdir / "metrics.json")["config_fingerprint"] == run_config.fingerprint(first)
  assert sweep_module._finished(str(workdir), first)

  second = tiny_config(data_dir, "optimal", **{"stats.cache_dir": cache_dir,
                                               "sampler.num_samples": 2})
  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # as if the process died while sampling
  monkeypatch.setattr(run_lib, "_sample", killed)
  with pytest.raises(KeyboardInterrupt):
    run_lib.run(second, str(workdir))
  assert not (workdir / "metrics.json").exists() and not (workdir / "samples.npz").exists()
  assert not (workdir / "grid.png").exists()
  assert _json(workdir / "config.json")["method"] == "optimal"
  assert not sweep_module._finished(str(workdir), second)
  assert not sweep_module._finished(str(workdir), first)


def test_sweep_checks_that_the_metrics_belong_to_the_config(tmp_path):
  from configs import default  # pylint: disable=g-import-not-at-top
  from golddiff_jax import outputs, run_config  # pylint: disable=g-import-not-at-top
  config, other = default.get_config(), default.get_config("samples=4")
  outputs.write_json(str(tmp_path / "config.json"), config.to_dict())
  outputs.write_json(str(tmp_path / "metrics.json"),
                     {"config_fingerprint": run_config.fingerprint(config)})
  assert sweep_module._finished(str(tmp_path), config)
  assert run_config.fingerprint(config) != run_config.fingerprint(other)
  outputs.write_json(str(tmp_path / "metrics.json"),  # an older run's metrics
                     {"config_fingerprint": run_config.fingerprint(other)})
  assert not sweep_module._finished(str(tmp_path), config)
  os.utime(tmp_path / "metrics.json", (1, 1))  # written before config.json, no fingerprint
  outputs.write_json(str(tmp_path / "metrics.json"), {})
  os.utime(tmp_path / "metrics.json", (1, 1))
  assert not sweep_module._finished(str(tmp_path), config)


def test_sweep_interrupted_writes_its_tables_and_compares_only_like_shapes(tmp_path, monkeypatch):
  from golddiff_jax import outputs  # pylint: disable=g-import-not-at-top
  study = tmp_path / "study.py"
  study.write_text('BASE_CONFIG = "configs/default.py"\nBASELINE = "a"\n'
                   'def get_sweep(arg=None):\n'
                   '  return [{"name": "a"}, {"name": "b", "sampler.num_samples": 4},'
                   ' {"name": "c"}]\n')
  calls = []

  def fake_run(config, run_dir):
    calls.append(run_dir)
    if len(calls) == 3:
      raise KeyboardInterrupt
    n = config.sampler.num_samples
    images = np.random.default_rng(len(calls)).uniform(-1, 1, (n, 2, 2, 1))
    outputs.write_npz(os.path.join(run_dir, "samples.npz"), images=images)
    outputs.write_json(os.path.join(run_dir, "metrics.json"),
                       {"peak_memory": {"bytes": 10 * len(calls)}})
  monkeypatch.setattr(sweep_module.run_lib, "run", fake_run)
  with pytest.raises(KeyboardInterrupt):
    sweep_module.run_sweep(str(study), str(tmp_path / "sweep"))
  import csv  # pylint: disable=g-import-not-at-top
  with open(tmp_path / "sweep" / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["status"] for r in table] == ["done", "done", "interrupted"]
  assert table[0]["r2_vs_baseline"] == "1.0" and table[1]["r2_vs_baseline"] == ""  # 16 vs 4 samples
  assert [r["peak_memory_bytes"] for r in table] == ["10", "20", ""]


# ---- filesystem errors ------------------------------------------------------------------------

def test_unwritable_cache_dir_fails_before_anything(data_dir, tmp_path):
  from golddiff_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  blocker = tmp_path / "file"
  blocker.write_text("x")
  workdir = tmp_path / "wd"
  with pytest.raises(ValueError, match="stats.cache_dir .* is not writable"):
    run_lib.run(tiny_config(data_dir, **{"stats.cache_dir": str(blocker / "stats")}),
                str(workdir))
  assert not workdir.exists()


def test_a_full_disk_is_one_error_in_the_log(data_dir, cache_dir, tmp_path, monkeypatch):
  from golddiff_jax import outputs, run as run_lib  # pylint: disable=g-import-not-at-top
  def full(path, **arrays):
    raise OSError(28, "No space left on device", path)
  monkeypatch.setattr(outputs, "write_npz", full)
  workdir = tmp_path / "wd"
  with pytest.raises(ValueError, match=r"filesystem error: No space left on device \(.*samples"):
    run_lib.run(tiny_config(data_dir, "wiener", **{"stats.cache_dir": cache_dir}), str(workdir))
  log = (workdir / "log.txt").read_text()
  assert "run failed: filesystem error: No space left on device" in log
  assert not (workdir / "metrics.json").exists()


def test_atomic_write_names_the_file_of_a_write_error(tmp_path):
  from golddiff_jax import atomic  # pylint: disable=g-import-not-at-top
  def full(f):
    raise OSError(28, "No space left on device")
  with pytest.raises(OSError, match="No space left on device") as caught:
    atomic.atomic_write(str(tmp_path / "a.npz"), full)
  assert caught.value.filename == str(tmp_path / "a.npz") and caught.value.errno == 28
  assert os.listdir(tmp_path) == []  # the temp file is gone


@pytest.mark.slow  # needs root and a tmpfs mount; a launcher run
def test_a_full_tmpfs_workdir_gives_one_error_line(tmp_path):
  mount = tmp_path / "tiny"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                    capture_output=True, check=False).returncode:
    pytest.skip("cannot mount a tmpfs here")
  try:
    result = _launch(["--config=configs/default.py", f"--workdir={mount / 'wd'}",
                      "--config.data.dataset=procedural", "--config.data.num_images=300",
                      "--config.data.subset_size=None", "--config.sampler.num_samples=4",
                      "--config.data.resolution=8", "--config.golden.low_res_dim=4",
                      f"--config.data.data_dir={tmp_path / 'data'}", "--jax_platforms=cpu"])
    assert "No space left on device" in _error_line(result)
    assert "run failed: filesystem error" in (mount / "wd" / "log.txt").read_text()
  finally:
    subprocess.run(["umount", str(mount)], check=False)


# ---- the statistics cache ---------------------------------------------------------------------

def test_stats_cache_is_shared_keyed_and_validated(data_dir, tmp_path):
  # pylint: disable-next=g-import-not-at-top
  from golddiff_jax import run_config, stats as stats_lib, stats_cache
  config = tiny_config(data_dir, "optimal")
  stats, info = stats_cache.fit_or_load(config)
  assert info["stats_path"].startswith(os.path.join(data_dir, "golddiff_stats"))
  assert not info["stats_cached"] and stats.num_images == 48
  again, info = stats_cache.fit_or_load(config)  # e.g. from another workdir
  assert info["stats_cached"]
  np.testing.assert_array_equal(np.asarray(again.eigvecs), np.asarray(stats.eigvecs))
  path = info["stats_path"]
  source = run_config.stats_source(config)

  # A valid file fitted from other data (another N) under this name is refitted.
  other = stats_lib.fit(np.asarray(stats.images).reshape(48, 8, 8, 3)[:30])
  stats_lib.save(other, path, source=source)
  refit, info = stats_cache.fit_or_load(config)
  assert not info["stats_cached"] and refit.num_images == 48
  stats_lib.save(other, path, source={**source, "num_images": 30})
  assert not stats_cache.fit_or_load(config)[1]["stats_cached"]
  # NaN in a cached file: refitted, never used.
  broken = stats_lib.from_arrays(np.asarray(stats.images), np.full(stats.dim, np.nan),
                                 np.asarray(stats.eigvals), np.asarray(stats.eigvecs),
                                 stats.image_shape)
  stats_lib.save(broken, path, source=source)
  with pytest.raises(ValueError, match="mean contains NaN"):
    stats_lib.load(path)
  refit, info = stats_cache.fit_or_load(config)
  assert not info["stats_cached"] and np.all(np.isfinite(np.asarray(refit.mean)))
  assert stats_cache.fit_or_load(config)[1]["stats_cached"]


def test_orphan_temp_files_are_removed_once_old(tmp_path):
  from golddiff_jax import stats_cache  # pylint: disable=g-import-not-at-top
  old, fresh, kept = (tmp_path / ".a.npz.x1.tmp", tmp_path / ".a.npz.x2.tmp", tmp_path / "a.npz")
  for path in (old, fresh, kept):
    path.write_bytes(b"x")
  os.utime(old, (1, 1))
  assert stats_cache.remove_orphans(str(tmp_path)) == [str(old)]
  assert not old.exists() and fresh.exists() and kept.exists()


# ---- data: offline, subsets -------------------------------------------------------------------

def test_an_unprepared_download_fails_fast_without_network(tmp_path, monkeypatch):
  import time  # pylint: disable=g-import-not-at-top
  from configs import mnist  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import tfds_loading  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds_loading, "network_reachable", lambda *a, **k: False)
  config = mnist.get_config()
  config.data.data_dir = str(tmp_path / "empty")
  start = time.perf_counter()
  with pytest.raises(ValueError, match="'mnist' is not prepared .* network is unreachable"):
    tfds_loading.load_images(config.data)
  assert time.perf_counter() - start < 30  # not minutes of download retries


def test_network_probe_is_quick_and_boolean():
  import time  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import tfds_loading  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  assert tfds_loading.network_reachable("host.invalid", 443, timeout=1.0) is False
  assert time.perf_counter() - start < 5


def test_subset_larger_than_the_split_names_the_field(data_dir):
  from golddiff_jax import data  # pylint: disable=g-import-not-at-top
  config = tiny_config(data_dir, **{"data.subset_size": 100})
  with pytest.raises(ValueError, match="data.subset_size=100 exceeds the 48 images of dataset "
                                       "'procedural' split 'train'"):
    data.load_images(config.data)
  assert data.load_images(tiny_config(data_dir, **{"data.subset_size": 40}).data
                          ).images.shape == (40, 8, 8, 3)


# ---- what the user sees -----------------------------------------------------------------------

def test_on_step_is_called_after_every_step():
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  stats = _tiny_stats()
  seen = []
  out = gd.sample(stats, np.zeros((2, 4, 4, 3), np.float32), method="wiener", num_steps=3,
                  on_step=seen.append)
  assert seen == [0, 1, 2] and len(out.timesteps) == 3


def test_log_lines_are_printed_above_the_progress_bar(capsys):
  import logging  # pylint: disable=g-import-not-at-top
  from golddiff_jax import progress, run as run_lib  # pylint: disable=g-import-not-at-top
  handler = logging.StreamHandler(sys.stderr)
  logging.getLogger().addHandler(handler)
  try:
    with progress.bar(3, "sampling") as bar:
      assert handler.stream is not sys.stderr  # routed through tqdm.write meanwhile
      run_lib.log.info("a log line")
      bar.update(1)
  finally:
    logging.getLogger().removeHandler(handler)
  assert handler.stream is sys.stderr
  assert "a log line\n" in capsys.readouterr().err


def test_peak_memory_is_the_runs_not_the_process(monkeypatch):
  from golddiff_jax import memory, outputs  # pylint: disable=g-import-not-at-top
  big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
  big[::512] += 1.0
  del big
  process = outputs.peak_memory()["bytes"]
  started = memory.start()
  if not started["host_reset"]:
    pytest.skip("no /proc/self/clear_refs here")
  small = np.ones(2**20)
  peak = memory.run_peak(started, [123, -1])
  del small
  assert "during this run" in peak["source"] and "RSS" in peak["source"]
  assert peak["bytes"] < process - 200 * 2**20
  # Device counters (GPU/TPU) cannot be reset: below the earlier peak, XLA's estimate is used.
  device = {"bytes": 5000, "per_device_bytes": [5000], "source": "device"}
  monkeypatch.setattr(outputs, "peak_memory", lambda: dict(device))
  started = memory.start()
  assert memory.run_peak(started, [123, 456, -1])["bytes"] == 456
  device["bytes"] = 7000
  assert memory.run_peak(started, [123])["bytes"] == 7000


def test_library_start_up_logs_are_quieted():
  import logging  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  for name in cli.NOISY_LOGGERS:
    assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING


def test_generating_a_builtin_dataset_prints_nothing(tmp_path, capfd):
  from golddiff_jax import data  # pylint: disable=g-import-not-at-top
  data.load_images(tiny_config(str(tmp_path), **{"data.num_images": 20}).data)  # a first build
  out, err = capfd.readouterr()
  assert "Downloading" not in out + err and "oneDNN" not in err, out + err
