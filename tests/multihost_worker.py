"""One process of the two-process CPU test in test_multihost.py (not collected by pytest).

    python tests/multihost_worker.py PROCESS_ID PORT OUTPUT.npz

Each process holds 4 fake CPU devices and loads only its own consecutive slice of the images;
`fit_process_local` reduces the statistics across processes and assembles the sharded database.
"""

import os
import sys

PROCESS_ID, PORT, OUTPUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{PORT}", num_processes=2, process_id=PROCESS_ID)

import numpy as np  # noqa: E402

import golddiff_jax as gd  # noqa: E402
import multihost_case as case  # noqa: E402
from golddiff_jax import stats as stats_lib  # noqa: E402

images = case.images()
split = case.SPLIT
local = images[:split] if PROCESS_ID == 0 else images[split:]
mesh = gd.make_mesh()
stats = stats_lib.fit_process_local(local, mesh=mesh)
for shard in stats.database.addressable_shards:
  assert shard.data.shape[0] == stats.database.shape[0] // 8, shard.data.shape
out = {"eigvals": np.asarray(stats.eigvals), "mean": np.asarray(stats.mean)}
for method, options in case.METHODS.items():
  result = gd.sample(stats, case.latents(), method=method, num_steps=case.STEPS,
                     key=jax.random.key(9), mesh=mesh, **options)
  out[method] = result.x0_trajectory
if PROCESS_ID == 0:
  np.savez(OUTPUT, **out)
