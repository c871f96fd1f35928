"""The denoiser contract: a method is one module plus its tests. This file defines a trivial
method, registers it, and runs it through the API (one device and a mesh) and a config, with no
edit anywhere else; and checks that docs/options.md is generated from the options dataclasses."""

import dataclasses
import numbers
import os

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golddiff_jax as gd
from golddiff_jax import run_config, schedules
from golddiff_jax.data import procedural_images
from golddiff_jax.denoisers import base, options_doc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the new method: everything it needs ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MeanOptions(base.Options):
  weight: float = base.option(
      0.0, "w ∈ [0, 1]: x̂_0 = (1 − w)·μ + w·x_t/√ᾱ_t (0: the database mean).")

  def check(self) -> None:
    super().check()
    w = self.weight
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0.0 <= w <= 1.0:
      raise ValueError(f"{base.name('weight')} must be in [0, 1], got {w!r}")


@flax.struct.dataclass
class MeanPlan:
  abar: jax.Array
  weight: jax.Array


def prepare(stats, abar, options: MeanOptions, batch):
  del stats, batch
  return MeanPlan(abar=jnp.float32(abar), weight=jnp.float32(options.weight))


def apply(stats, plan, x_t, key=None):
  del key
  return (1.0 - plan.weight) * stats.mean + plan.weight * x_t / jnp.sqrt(plan.abar)


@pytest.fixture(scope="module")
def mean_method():
  # The default apply_sharded, plan_specs and check_mesh_options are used.
  with base.registered("mean", options=MeanOptions, prepare=prepare, apply=apply) as denoiser:
    yield denoiser


# ---- it runs everywhere the built-in methods do ----------------------------------------------

@pytest.fixture(scope="module")
def data():
  images = procedural_images(24, 4, 4, 3, seed=3)
  stats = gd.fit(images)
  latents = np.asarray(gd.noise(jax.random.key(1), 8, stats.image_shape))
  return images, stats, latents


def _want(images, x_t, abar, weight):
  mean = np.asarray(images, np.float64).reshape(len(images), -1).mean(axis=0)
  x = np.asarray(x_t, np.float64).reshape(len(x_t), -1)
  return (1.0 - weight) * mean + weight * x / np.sqrt(abar)


def test_registered_and_listed(mean_method):
  assert gd.METHODS["mean"] is mean_method and mean_method.option_names == ("weight",)
  with pytest.raises(ValueError, match="valid methods: .*'mean'"):
    base.get("nope")


def test_denoise(mean_method, data):
  images, stats, latents = data
  abar = float(schedules.alpha_bar(300))
  for weight in (0.0, 0.5):
    got = gd.denoise(stats, latents, 300, method="mean", weight=weight)
    np.testing.assert_allclose(np.asarray(got).reshape(len(latents), -1),
                               _want(images, latents, abar, weight), rtol=1e-5, atol=1e-5)


def test_sample_on_one_device_and_a_mesh(mean_method, data):
  images, stats, latents = data
  one = gd.sample(stats, latents, method="mean", num_steps=3)
  np.testing.assert_allclose(one.images.reshape(len(latents), -1),
                             _want(images, latents, 1.0, 0.0), rtol=1e-5, atol=1e-5)
  half = gd.sample(stats, latents, method="mean", num_steps=3, weight=0.5)
  for data_axis, batch_axis in ((8, 1), (4, 2)):
    mesh = gd.make_mesh(data=data_axis, batch=batch_axis)
    for out, weight in ((one, 0.0), (half, 0.5)):
      got = gd.sample(stats, latents, method="mean", num_steps=3, mesh=mesh, weight=weight)
      np.testing.assert_allclose(got.x0_trajectory, out.x0_trajectory, rtol=1e-6, atol=1e-6)


def test_config(mean_method):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()  # the sections now hold the new option, unset
  assert config.denoiser.weight is None
  config.method = "mean"
  run_config.validate(config)
  assert run_config.method_options(config) == {"weight": 0.0}
  config.denoiser.weight = 0.25
  run_config.validate(config)
  assert run_config.method_options(config) == {"weight": 0.25}


def test_bad_option_is_one_line(mean_method, data):
  from configs import default  # pylint: disable=g-import-not-at-top
  _, stats, latents = data
  with pytest.raises(ValueError) as api:
    gd.sample(stats, latents, method="mean", num_steps=2, weight=1.5)
  assert str(api.value) == "weight must be in [0, 1], got 1.5"
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['wieght'\] for method 'mean'"):
    gd.denoise(stats, latents, 300, method="mean", wieght=0.5)
  config = default.get_config()
  config.method = "mean"
  config.denoiser.weight = 2.0
  with pytest.raises(ValueError) as cfg:
    run_config.validate(config)
  assert str(cfg.value) == "denoiser.weight must be in [0, 1], got 2.0"


# ---- the option reference -----------------------------------------------------------------------

def test_options_doc_is_up_to_date():
  with open(os.path.join(ROOT, "docs", "options.md"), encoding="utf-8") as f:
    committed = f.read()
  assert committed == options_doc.render(), (
      "docs/options.md is stale: python -m golddiff_jax.denoisers.options_doc > docs/options.md")


def test_every_option_is_documented():
  for name in options_doc.builtin_methods():
    for field in dataclasses.fields(gd.METHODS[name].Options):
      assert base.doc(field), f"{name}.{field.name} has no documentation"


def test_a_new_module_in_the_package_is_discovered(tmp_path):
  """Dropping one module into golddiff_jax/denoisers/ adds a method: no other file changes."""
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  package = tmp_path / "golddiff_jax"
  shutil.copytree(os.path.join(ROOT, "golddiff_jax"), package,
                  ignore=shutil.ignore_patterns("__pycache__"))
  (package / "denoisers" / "halfway.py").write_text(
      "import dataclasses\n"
      "import flax.struct\n"
      "import jax\n"
      "import jax.numpy as jnp\n"
      "from golddiff_jax.denoisers import base\n\n"
      "@dataclasses.dataclass(frozen=True)\n"
      "class Options(base.Options):\n"
      "  pass\n\n"
      "@flax.struct.dataclass\n"
      "class Plan:\n"
      "  abar: jax.Array\n\n"
      "def prepare(stats, abar, options, batch):\n"
      "  return Plan(abar=jnp.float32(abar))\n\n"
      "def apply(stats, plan, x_t, key=None):\n"
      "  return 0.5 * stats.mean + 0.5 * x_t / jnp.sqrt(plan.abar)\n\n"
      "base.register('halfway', options=Options, prepare=prepare, apply=apply)\n")
  script = ("import golddiff_jax as gd, jax, numpy as np\n"
            "from golddiff_jax.data import procedural_images\n"
            "images = procedural_images(12, 4, 4, 3, seed=1)\n"
            "stats = gd.fit(images)\n"
            "out = gd.sample(stats, gd.noise(jax.random.key(0), 2, stats.image_shape),\n"
            "                method='halfway', num_steps=2)\n"
            "print(list(gd.METHODS)[-1], np.isfinite(out.images).all())\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": str(tmp_path), "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split()[-2:] == ["halfway", "True"]
