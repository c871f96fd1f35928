"""Config files: each loads and validates, carries the published hyperparameters
(docs/method.md §7), and every field can be overridden from the command line; validation rejects bad
values with a clear message."""

import glob
import os
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from golddiff_jax import METHODS, run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import common, default, procedural  # noqa: E402  pylint: disable=g-import-not-at-top

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if os.path.basename(p) not in ("__init__.py", "common.py"))
HAS_GOLDDIFF = "golddiff" in METHODS

# docs/method.md §7: dataset → (k_min, k_max, θ, global batch).
SPEC = {"mnist": (3000, 6000, 0.02, 64), "fashion_mnist": (3000, 6000, 0.02, 32),
        "cifar10": (2500, 5000, 0.03, 16), "celebahq": (1500, 3000, 0.03, 32),
        "afhq": (1000, 2000, 0.04, 32), "imagenet64_cond": (60, 120, 0.02, 64)}


def load_config(path, arg=None):
  """Loads a config file the way the launcher does (through config_flags)."""
  argv = ["prog", f"--config={path}" + (f":{arg}" if arg else "")]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def runnable(config):
  """Tests must pass whether or not GoldDiff is registered yet."""
  if not HAS_GOLDDIFF and config.method == "golddiff":
    with config.unlocked():
      config.method = "pca_locality"
  return config


def test_all_dataset_configs_exist():
  names = {os.path.basename(p)[:-3] for p in CONFIG_FILES}
  assert {"default", "mnist", "fashion_mnist", "cifar10", "celebahq", "afhq", "imagenet64",
          "imagenet64_cond"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_loads_and_validates(path):
  config = load_config(path)
  assert config.method == "golddiff"
  assert config.is_locked
  run_config.validate(runnable(config))


@pytest.mark.parametrize("name", sorted(SPEC))
def test_spec_hyperparameters(name):
  config = load_config(os.path.join(ROOT, "configs", f"{name}.py"), "mask=published")
  k_min, k_max, theta, batch = SPEC[name]
  assert (config.golden.k_min, config.golden.k_max) == (k_min, k_max)
  assert config.denoiser.mask_threshold == theta
  options = run_config.method_options(config)  # unset fields: the method's defaults
  assert options["temperature"] == 1.0 and options["low_res_dim"] == 16
  assert (config.sampler.num_samples, config.sampler.num_steps) == (128, 10)
  assert config.sampler.batch_size == batch and config.seed == 7
  assert config.data.split == "train" and config.data.subset_size is None


def test_default_mask_variant_and_its_thresholds():
  """The floored mask by default; θ per variant (the published values with mask=published)."""
  for name in sorted(SPEC):
    config = load_config(os.path.join(ROOT, "configs", f"{name}.py"))
    assert config.denoiser.diag_floor == common.MASK_VARIANTS[common.DEFAULT_MASK]["diag_floor"]
    published = load_config(os.path.join(ROOT, "configs", f"{name}.py"), "mask=published")
    assert (published.denoiser.eig_floor, published.denoiser.diag_floor) == (0.0, 0.0)
  assert load_config(os.path.join(ROOT, "configs", "mnist.py")).denoiser.mask_threshold == 0.01
  assert load_config(os.path.join(ROOT, "configs", "cifar10.py")).denoiser.mask_threshold == 0.03
  default_config = default.get_config()
  assert default_config.data.dataset == "mnist5k" and default_config.denoiser.mask_threshold == 0.01
  with pytest.raises(ValueError, match="unknown mask variant"):
    default.get_config("mask=nope")


def test_conditional_imagenet_is_one_class_with_global_statistics():
  config = load_config(os.path.join(ROOT, "configs", "imagenet64_cond.py"), "cls=207")
  assert config.data.dataset == "imagenet64" and config.data.class_id == 207
  assert config.stats.source == "global"
  assert "class207" in run_config.stats_key(config)


def test_config_arguments():
  config = load_config(os.path.join(ROOT, "configs", "cifar10.py"),
                       "method=pca_locality,published,samples=8,subset=1000")
  assert config.method == "pca_locality"
  assert config.denoiser.mask_threshold == 0.05 and config.denoiser.softmax == "wssm"
  assert config.denoiser.wssm_chunk == 512 and config.sampler.num_samples == 8
  assert config.data.subset_size == 1000 and config.golden.k_min is None
  with pytest.raises(ValueError, match="unknown config argument 'k'"):
    common.parse_arg("k=3", method="golddiff")
  with pytest.raises(ValueError, match="must be a int"):
    common.parse_arg("n=abc", n=1)


def test_every_field_overridable_from_flags():
  overrides = {"data.class_id": 3, "data.subset_size": 100, "data.data_dir": "/x",
               "golden.static_m": 400, "golden.k_min": 7, "denoiser.chunk_size": 64,
               "sampler.num_steps": 5, "method": "optimal", "stats.cache_dir": "/y",
               "denoiser.temperature": 0.5, "golden.dynamic_k": False}
  argv = (["prog", f"--config={os.path.join(ROOT, 'configs', 'default.py')}"]
          + [f"--config.{k}={v}" for k, v in overrides.items()])
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  for path, want in overrides.items():
    node = values.config
    for part in path.split("."):
      node = node[part]
    assert node == want, path


def test_every_leaf_accepts_a_flag_override():
  leaves = {}

  def walk(node, prefix):
    for key, value in node.items():
      if hasattr(value, "items"):
        walk(value, f"{prefix}{key}.")
      else:
        leaves[f"{prefix}{key}"] = node.get_type(key)  # None-valued fields keep their type
  walk(default.get_config(), "")
  samples = {bool: "false", int: "3", float: "0.5", str: "x"}
  argv = ["prog", f"--config={os.path.join(ROOT, 'configs', 'default.py')}"]
  argv += [f"--config.{k}={samples.get(kind, '3')}" for k, kind in leaves.items()]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)  # raises if any leaf (None-valued placeholders included) cannot be overridden
  assert len(leaves) > 40


def _valid_tiny(**changes):
  config = procedural.get_config()
  config.method = "pca_locality"
  for path, value in changes.items():
    *parents, field = path.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  return config


@pytest.mark.parametrize("changes,message", [
    ({"golden.k_min": 300, "golden.k_max": 200}, "k_min=300 must be <= golden.k_max=200"),
    ({"sampler.num_samples": -1}, "sampler.num_samples must be >= 1"),
    ({"sampler.batch_size": 0}, "sampler.batch_size must be >= 1"),
    ({"data.subset_size": -5}, "data.subset_size must be >= 2"),
    ({"data.dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"method": "kamb"}, "unknown method 'kamb'"),
    ({"data.class_id": 3}, "'procedural' has no classes"),
    ({"data.dataset": "cifar10", "data.class_id": 10}, "has 10 classes"),
    ({"data.split": "validation"}, "has splits"),
    ({"sampler.num_steps": 1001}, "num_steps must be <= 1000"),
    ({"denoiser.mask_threshold": 1.5}, "mask_threshold"),
    ({"denoiser.temperature": -1.0}, "temperature must be a positive number"),
    ({"stats.source": "mixed"}, "stats.source must be one of"),
    ({"mesh.data": 0}, "mesh.data"),
    ({"mesh.batch": 0}, "mesh.batch must be >= 1"),
    ({"mesh.batch": 4, "sampler.batch_size": 6}, "sampler.batch_size=6 must be a multiple of"),
])
def test_validation_errors(changes, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    run_config.validate(_valid_tiny(**changes))


@pytest.mark.skipif(not HAS_GOLDDIFF, reason="golddiff not registered yet")
def test_golddiff_errors_are_caught_up_front():
  with pytest.raises(ValueError, match="low_res_dim=16 exceeds the image resolution 8"):
    run_config.validate(_valid_tiny(**{"method": "golddiff", "data.resolution": 8}))
  with pytest.raises(ValueError, match="exceeds the number of database images"):
    run_config.validate(_valid_tiny(**{"method": "golddiff", "golden.k_max": 5000,
                                       "golden.k_min": 100}))
  with pytest.raises(ValueError, match="static_m"):
    run_config.validate(_valid_tiny(**{"method": "golddiff", "golden.dynamic_m": False,
                                       "golden.static_m": 50}))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_options_are_exactly_the_methods_keys(method):
  config = _valid_tiny(method=method)
  options = run_config.method_options(config)
  assert set(options) == set(METHODS[method].option_names)
  run_config.validate(config)


def test_an_override_of_an_option_the_method_lacks_is_one_error_line(tmp_path):
  config = default.get_config()  # golddiff
  run_config.check_overrides(config, ["golden.k_min", "denoiser.mask_threshold", "seed"])
  with pytest.raises(ValueError, match=r"--config.denoiser.patch_size: method 'golddiff' has no "
                                       r"option 'patch_size' \(its options: \['mask_threshold'"):
    run_config.check_overrides(config, ["denoiser.patch_size"])
  config.method = "optimal"
  with pytest.raises(ValueError, match="method 'optimal' has no option 'k_min'"):
    run_config.check_overrides(config, ["golden.k_min"])
  from golddiff_jax import cli  # pylint: disable=g-import-not-at-top
  assert cli.config_overrides(["p", "--config=c.py", "--config.golden.k_min=3", "--config.x"]) == [
      "golden.k_min", "x"]
  import subprocess  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      [sys.executable, "-m", "golddiff_jax.main", "--config=configs/default.py:method=els",
       f"--workdir={tmp_path / 'wd'}", "--config.golden.k_min=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith(
      "error: --config.golden.k_min: method 'els' has no option 'k_min'"), lines
  assert not (tmp_path / "wd").exists()
