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
