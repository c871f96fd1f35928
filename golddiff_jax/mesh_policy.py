"""Which device mesh a run uses (``config.mesh``), the one place that decides it.

The mechanics of meshes and shardings are `golddiff_jax.sharding`; this module holds the run's
policy: one device needs no mesh, WSSM averaging cannot be sharded, a mesh larger than the
machine is an error.
"""

from __future__ import annotations

import logging

import jax

from golddiff_jax import run_config, sharding

log = logging.getLogger("golddiff_jax.run")


def run_mesh(config):
  """The run's device mesh from ``config.mesh`` (None on a single device).

  WSSM averaging cannot be sharded (it depends on the global chunking): with ``mesh.data = -1``
  such a run uses one device; an explicit multi-device ``mesh.data`` is an error. A mesh needing
  more devices than there are is an error too (also on one device).
  """
  if jax.device_count() == 1 and config.mesh.data in (-1, 1) and config.mesh.batch == 1:
    return None
  if run_config.method_options(config).get("softmax") == "wssm":
    if config.mesh.data not in (-1, 1) or config.mesh.batch != 1:
      raise ValueError("softmax='wssm' cannot be sharded; set mesh.data=-1 or 1 and "
                       "mesh.batch=1, or use softmax='exact'")
    log.info("softmax='wssm' is not sharded: running on one device")
    return None
  try:
    return sharding.make_mesh(data=config.mesh.data, batch=config.mesh.batch)
  except ValueError as e:
    raise ValueError(f"mesh.data={config.mesh.data}, mesh.batch={config.mesh.batch}: {e}") from e
