"""Test setup: 8 fake CPU devices, configured before JAX initialises its backend."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if not f.startswith("--xla_force_host_platform_device_count")]
    + ["--xla_force_host_platform_device_count=8"])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import pytest  # noqa: E402  (after the environment above)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A TFDS data_dir per test module (the built-in datasets are generated into it)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  """A statistics cache per test module, shared by the tests that do not test the cache."""
  return str(tmp_path_factory.mktemp("stats"))
