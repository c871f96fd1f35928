"""Two real JAX processes (4 CPU devices each, gloo collectives on localhost): each loads half
the images, statistics are reduced across processes, the database is one global sharded array,
and every method's trajectory equals the single-process one (relative difference ≤ 1e-4)."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import golddiff_jax as gd
import multihost_case as case

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  port, output = str(_free_port()), str(tmp_path / "out.npz")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_worker.py"),
                               str(p), port, output], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for p in (0, 1)]
  logs = [w.communicate(timeout=600)[0] for w in workers]
  for w, log in zip(workers, logs):
    assert w.returncode == 0, log[-3000:]
  got = np.load(output)
  stats = gd.fit(case.images())
  np.testing.assert_allclose(got["eigvals"], np.asarray(stats.eigvals), atol=1e-5)
  np.testing.assert_allclose(got["mean"], np.asarray(stats.mean), atol=1e-6)
  for method, options in case.METHODS.items():
    want = gd.sample(stats, case.latents(), method=method, num_steps=case.STEPS,
                     key=jax.random.key(9), **options).x0_trajectory
    rel = np.linalg.norm(got[method] - want) / np.linalg.norm(want)
    assert rel <= 1e-4, (method, rel)
