"""Orbax checkpoints of the reference U-Net's training state, with the metadata to rebuild it.

A checkpoint ``<workdir>/checkpoints/<step>/`` holds four items, each in its own folder:

* ``params``, ``ema_params``, ``opt_state``: array pytrees (`ocp.args.StandardSave`);
* ``meta``: JSON with ``arch`` (the `UNet` fields), ``image_shape`` [H, W, C], ``step`` and
  ``format``, so a loader can check compatibility before it touches an array.

Items restore independently: `golddiff_jax.models.reference.load_reference` reads ``meta`` and
``ema_params`` only. Saving is synchronous, from host copies (a few hundred MB at most for the
published networks (docs/method.md §8.1)); an interrupted save leaves a temporary folder that orbax
ignores, so the latest *finished* step is what restores.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT = 1
SUBDIR = "checkpoints"
ARRAY_ITEMS = ("params", "ema_params", "opt_state")


def resolve_dir(path: str) -> str:
  """The checkpoint folder for ``path``: a training workdir or its ``checkpoints/`` folder."""
  path = os.path.abspath(os.fspath(path))
  nested = os.path.join(path, SUBDIR)
  return nested if os.path.isdir(nested) else path


def open_manager(directory: str, *, keep: int = 3, read_only: bool = False
                 ) -> ocp.CheckpointManager:
  """A manager over ``directory`` keeping the ``keep`` latest steps (read_only: never writes)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
      create=not read_only, read_only=read_only, enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def make_meta(arch: dict, image_shape, step: int) -> dict:
  return {"format": FORMAT, "arch": normalize_arch(arch),
          "image_shape": [int(s) for s in image_shape], "step": int(step)}


def normalize_arch(arch: dict) -> dict:
  """The `UNet` constructor fields as plain JSON-able Python values (ch_mult as a tuple); an
  arch with ``kind == "mlp"`` is the `golddiff_jax.models.mlp.MLP` fields."""
  if arch.get("kind") == "mlp":
    from golddiff_jax.models import mlp  # pylint: disable=g-import-not-at-top
    return mlp.normalize_arch(arch)
  return {"ch": int(arch["ch"]), "ch_mult": tuple(int(m) for m in arch["ch_mult"]),
          "num_res_blocks": int(arch["num_res_blocks"]), "dropout": float(arch["dropout"]),
          "num_groups": int(arch["num_groups"])}


def _to_host(x):
  if isinstance(x, jax.Array):  # replicated: any one copy is the whole array
    return np.asarray(x.addressable_data(0) if x.is_fully_replicated else x)
  return np.asarray(x)


def save(manager: ocp.CheckpointManager, step: int, arrays: dict[str, Any], meta: dict) -> None:
  """Saves the array items (``params``, ``ema_params``, ``opt_state``) and ``meta`` at ``step``.

  Arrays are copied to host NumPy first: orbax would otherwise slice every replicated array
  into per-device pieces (seconds per save on 8 CPU devices); restoring into a sharded target
  (`abstract`) puts them back on the devices.
  """
  items = {name: ocp.args.StandardSave(jax.tree.map(_to_host, arrays[name]))
           for name in ARRAY_ITEMS}
  manager.save(int(step), args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **items),
               force=True)
  manager.wait_until_finished()


def abstract(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Shape/dtype/sharding skeleton of ``tree`` (arrays or ShapeDtypeStructs) to restore into."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  meta = dict(meta)
  meta["arch"] = normalize_arch(meta["arch"])
  meta["image_shape"] = tuple(int(s) for s in meta["image_shape"])
  return meta


def restore(manager: ocp.CheckpointManager, step: int, targets: dict[str, Any]) -> dict:
  """Restores the named array items into ``targets`` (abstract trees, see `abstract`)."""
  args = {name: ocp.args.StandardRestore(target) for name, target in targets.items()}
  return dict(manager.restore(step, args=ocp.args.Composite(**args)))


def latest(directory: str) -> tuple[ocp.CheckpointManager, int, dict]:
  """Opens ``directory`` read-only: (manager, latest step, meta). ValueError if there is none."""
  directory = resolve_dir(directory)
  if not os.path.isdir(directory):
    raise ValueError(f"no reference checkpoint: {directory!r} does not exist (train one with "
                     f"experiments/train_reference.py --workdir=...)")
  try:
    manager = open_manager(directory, read_only=True)
    step = manager.latest_step()
  except Exception as e:  # noqa: BLE001 - orbax raises many types for foreign folders.
    raise ValueError(f"could not read checkpoints in {directory!r}: {e}") from e
  if step is None:
    raise ValueError(f"no checkpoint found in {directory!r} (expected a training workdir or its "
                     f"{SUBDIR}/ folder with numbered steps)")
  try:
    meta = read_meta(manager, step)
  except Exception as e:  # noqa: BLE001
    raise ValueError(f"checkpoint {directory}/{step} is unreadable (missing or corrupt meta): "
                     f"{e}") from e
  return manager, step, meta
