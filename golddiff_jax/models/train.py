"""Training the reference U-Net: ε-prediction MSE with optax AdamW, EMA weights, orbax checkpoints.

    from golddiff_jax.models import train
    metrics = train.train(config, workdir)   # config: configs/train/<dataset>.py

One step (a jitted pure function ``(state, batch, key) -> (state, metrics)``): t ~ U{0…999},
ε ~ N(0, I), x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (ᾱ from `golddiff_jax.schedules`), loss = mean (ε̂ − ε)²;
gradient clipped by global norm, AdamW with linear warm-up, then EMA of the parameters. The step
key is ``fold_in(key, step)``, split into t, ε and dropout streams. The batch is sharded over a 1-D
``data`` mesh, the state replicated; the compiler inserts the gradient all-reduce.

Data: the images are loaded once (`golddiff_jax.data.load_images`); the batch of step s is a slice
of epoch ⌊s/E⌋'s permutation (NumPy Generator seeded with ``[seed, epoch]``), so the order is a
function of the step and a resumed run sees exactly the batches an uninterrupted one would.

Models: ``config.model.kind == "mlp"`` trains the vector ε-model `golddiff_jax.models.mlp.MLP`
(data given as [N, d, 1, 1]); otherwise the U-Net. ``train.optimizer`` is ``adamw`` (default) or
``sgd``; ``train.lr_decay`` ``constant`` (default) or ``cosine`` (to 0 at ``num_steps``), both
after the warm-up.

Sparsity regularisation (optional ``reg`` section, `golddiff_jax.sparsity.penalties.Reg`):
``reg.target`` ∈ {none, weights, score, eps, x0}, ``reg.r`` ≥ 0, ``reg.t_weight``, ``reg.group``,
``reg.exclude``. Output penalties are added inside the jitted loss (the log then has ``dsm`` and
``penalty`` apart); the weight penalty is a proximal step chained after the optimiser, masked to
kernels (exact ISTA with ``sgd``, a heuristic after Adam; ``train_summary.json`` says which, and
the fraction of exactly-zero kernel entries). With r = 0 (or target none) the step is exactly
the plain DSM step.

The workdir gets ``config.json``, ``checkpoints/`` (see `checkpoint`), ``train_metrics.jsonl`` (one
line per log step: step, loss = mean over the steps since the previous line, grad_norm, lr,
steps_per_sec) and ``train_summary.json``. Rerunning on a workdir with checkpoints resumes from the
latest one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
import types
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from golddiff_jax import outputs, schedules, sharding
from golddiff_jax.models import checkpoint as ckpt, mlp
from golddiff_jax.models.unet import UNet, check_arch
from golddiff_jax.sparsity import penalties
from golddiff_jax.workdirs import ensure_workdir

log = logging.getLogger("golddiff_jax.models.train")
log.setLevel(logging.INFO)

METRICS_FILE = "train_metrics.jsonl"


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array        # int32 scalar: updates applied so far
  params: Any
  ema_params: Any
  opt_state: Any


def arch_of(config) -> dict:
  return ckpt.normalize_arch(config.model.to_dict())


def build_model(arch: dict):
  """The network an ``arch`` (see `arch_of`) describes: the MLP or the U-Net."""
  if arch.get("kind") == mlp.KIND:
    return mlp.MLP(**{k: v for k, v in arch.items() if k != "kind"})
  return UNet(**arch)


def reg_of(config) -> penalties.Reg:
  """The config's ``reg`` section (absent: no regularisation); ValueError for bad values."""
  return penalties.Reg.from_config(config.get("reg") if hasattr(config, "get") else None)


def make_mesh(num_devices: int = -1) -> jax.sharding.Mesh:
  """The training mesh: ``num_devices`` devices (-1: all) on the ``data`` axis, which shards the
  batch (`golddiff_jax.sharding.make_mesh`; Auto axes, so the compiler propagates the batch
  sharding through the network)."""
  if isinstance(num_devices, bool) or not isinstance(num_devices, int) or (
      num_devices != -1 and not 1 <= num_devices <= jax.device_count()):
    raise ValueError(f"mesh.data must be -1 or in [1, {jax.device_count()}], got {num_devices}")
  return sharding.make_mesh(data=num_devices)


def check_config(config, num_devices: int) -> None:
  """Raises ValueError for settings that cannot train (checked before any work)."""
  t = config.train
  model = config.model.to_dict()
  if model.get("kind") == mlp.KIND:
    mlp.check_arch(model)
  else:
    check_arch(model)
  reg = reg_of(config)
  if reg.group != "none" and model.get("kind") != mlp.KIND:
    raise ValueError(f"reg.group={reg.group!r} needs a model whose first layer is dense (the "
                     f"MLP, model.kind='mlp'); this model starts with a convolution")
  if t.get("optimizer", "adamw") not in OPTIMIZERS:
    raise ValueError(f"train.optimizer must be one of {list(OPTIMIZERS)}, got {t.optimizer!r}")
  if t.get("lr_decay", "constant") not in LR_DECAYS:
    raise ValueError(f"train.lr_decay must be one of {list(LR_DECAYS)}, got {t.lr_decay!r}")
  for name in ("batch_size", "num_steps", "log_every", "checkpoint_every", "keep_checkpoints"):
    if int(t[name]) < 1:
      raise ValueError(f"train.{name} must be >= 1, got {t[name]}")
  if t.batch_size % num_devices:
    raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the number of "
                     f"devices ({num_devices})")
  if not t.learning_rate > 0 or t.warmup_steps < 0 or t.weight_decay < 0 or t.grad_clip <= 0:
    raise ValueError("train.learning_rate and train.grad_clip must be > 0, train.warmup_steps "
                     "and train.weight_decay >= 0")
  if not 0.0 <= t.ema_decay < 1.0:
    raise ValueError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")


OPTIMIZERS = ("adamw", "sgd")
LR_DECAYS = ("constant", "cosine")


def make_optimizer(t, reg: penalties.Reg | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """clip_by_global_norm → AdamW (or SGD), learning rate 0 → ``learning_rate`` over
  ``warmup_steps``, then constant (or cosine to 0 at ``num_steps``); then, for
  ``reg.target == 'weights'``, the masked proximal step with threshold lr(n)·r."""
  warm = max(int(t.warmup_steps), 1)
  after = (optax.cosine_decay_schedule(t.learning_rate, max(int(t.num_steps) - warm, 1))
           if getattr(t, "lr_decay", "constant") == "cosine"
           else optax.constant_schedule(t.learning_rate))
  schedule = optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, warm), after],
                                  [warm])
  base = (optax.sgd(schedule) if getattr(t, "optimizer", "adamw") == "sgd"
          else optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay))
  parts = [optax.clip_by_global_norm(t.grad_clip), base]
  prox = penalties.weight_prox(reg or penalties.Reg(), schedule)
  if prox is not None:
    parts.append(prox)
  return optax.chain(*parts), schedule


def prox_kind(t, reg: penalties.Reg) -> str:
  """How the weight penalty was applied: ``ista`` (SGD, exact proximal gradient),
  ``adam_heuristic`` (prox after Adam's update) or ``none``."""
  if reg.target != "weights" or not reg.r > 0:
    return "none"
  return "ista" if getattr(t, "optimizer", "adamw") == "sgd" else "adam_heuristic"


def init_state(model: UNet, tx: optax.GradientTransformation, image_shape, key) -> TrainState:
  x = jnp.zeros((1, *image_shape), jnp.float32)
  params = model.init({"params": key}, x, jnp.zeros((1,), jnp.int32), train=False)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))


def make_train_step(model, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    ema_decay: float, reg: penalties.Reg | None = None):
  """The pure step ``(state, batch [B,H,W,C], key) -> (state, metrics)`` (not jitted).

  With an active output penalty (``reg``) the loss is DSM + r·P_t and the metrics add ``dsm``
  and ``penalty``; otherwise the loss is the plain DSM term.
  """
  abars = jnp.asarray(schedules.alphas_cumprod())
  reg = reg or penalties.Reg()
  output_reg = reg.active and reg.target in penalties.OUTPUT_TARGETS

  def loss_fn(params, x0, key):
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    t = jax.random.randint(k_t, x0.shape[:1], 0, abars.shape[0], dtype=jnp.int32)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    abar = abars[t][:, None, None, None]
    x_t = jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * eps
    eps_hat = model.apply({"params": params}, x_t, t, train=True, rngs={"dropout": k_drop})
    dsm = jnp.mean(jnp.square(eps_hat - eps))
    if not output_reg:
      return dsm, {}
    penalty = penalties.output_penalty(reg.target, eps_hat, x_t, abar, t_weight=reg.t_weight)
    return dsm + reg.r * penalty, {"dsm": dsm, "penalty": penalty}

  def step(state: TrainState, batch: jax.Array, key: jax.Array):
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, jax.random.fold_in(key, state.step))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # EMA with a warm-up, min(decay, (1+n)/(10+n)), so early averages are not dominated by init.
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
               **parts}
    return TrainState(state.step + 1, params, ema, opt_state), metrics

  return step


def jit_train_step(step_fn, mesh: jax.sharding.Mesh):
  """``step_fn`` jitted over ``mesh``: batch sharded P('data'), state and key replicated."""
  replicated = NamedSharding(mesh, P())
  return jax.jit(step_fn, in_shardings=(replicated, NamedSharding(mesh, P("data")), replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


_HYPER = ("learning_rate", "warmup_steps", "b1", "b2", "weight_decay", "grad_clip", "ema_decay")


def hyperparameters(t, reg: penalties.Reg | None = None) -> tuple:
  """The ``train`` fields (and the ``reg`` settings) that shape the compiled step, hashable."""
  cosine = t.get("lr_decay", "constant") == "cosine"
  return (tuple(float(t[name]) for name in _HYPER)
          + (str(t.get("optimizer", "adamw")), str(t.get("lr_decay", "constant")),
             int(t.num_steps) if cosine else 0, reg or penalties.Reg()))


def _setup(hyper: tuple) -> tuple[types.SimpleNamespace, penalties.Reg]:
  """`hyperparameters`' tuple back as a ``train``-like namespace and the ``Reg``."""
  t = types.SimpleNamespace(**dict(zip(_HYPER, hyper)))
  t.optimizer, t.lr_decay, t.num_steps = hyper[len(_HYPER):len(_HYPER) + 3]
  return t, hyper[-1]


def _key_struct(sharding) -> jax.ShapeDtypeStruct:
  key = jax.eval_shape(lambda: jax.random.key(0))
  return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding)


def abstract_state(model: UNet, hyper: tuple, image_shape: tuple, mesh) -> TrainState:
  """The state's shapes and dtypes, replicated on ``mesh`` (a restore target; nothing runs)."""
  tx, _ = make_optimizer(*_setup(hyper))
  shapes = jax.eval_shape(functools.partial(init_state, model, tx, image_shape),
                          jax.random.key(0))
  return ckpt.abstract(shapes, NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=4)
def compiled_init(model: UNet, hyper: tuple, image_shape: tuple, mesh):
  """``key -> TrainState`` compiled once per process and setting (replicated output).

  It runs once per training, so it is compiled without LLVM optimisation: XLA:CPU spends
  half a minute optimising the unrolled threefry of every parameter's initialiser otherwise.
  """
  tx, _ = make_optimizer(*_setup(hyper))
  replicated = NamedSharding(mesh, P())
  fn = jax.jit(functools.partial(init_state, model, tx, image_shape), out_shardings=replicated)
  return fn.lower(_key_struct(replicated)).compile(
      compiler_options={"xla_backend_optimization_level": 0})


@functools.lru_cache(maxsize=4)
def compiled_step(model: UNet, hyper: tuple, image_shape: tuple, batch_size: int, mesh):
  """The jitted train step compiled for one setting, cached per process (a notebook or test
  that trains twice compiles once). Arguments: state, batch and key with the step's shardings."""
  t, reg = _setup(hyper)
  tx, schedule = make_optimizer(t, reg)
  batch = jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32,
                               sharding=NamedSharding(mesh, P("data")))
  step = jit_train_step(make_train_step(model, tx, schedule, t.ema_decay, reg), mesh)
  return step.lower(abstract_state(model, hyper, image_shape, mesh), batch,
                    _key_struct(NamedSharding(mesh, P()))).compile()


def restore_params(config, workdir: str, image_shape: tuple, item: str = "ema_params") -> Any:
  """``item`` (``params`` or ``ema_params``) of the latest checkpoint in ``workdir``, on the
  config's mesh (replicated). ValueError when there is no checkpoint or it does not fit."""
  mesh = make_mesh(config.mesh.data)
  manager, step, meta = ckpt.latest(workdir)
  try:
    arch = arch_of(config)
    if meta["arch"] != arch or meta["image_shape"] != tuple(image_shape):
      raise ValueError(f"checkpoint in {workdir!r} is {meta['arch']} on {meta['image_shape']}, "
                       f"not {arch} on {tuple(image_shape)}")
    like = abstract_state(build_model(arch), hyperparameters(config.train, reg_of(config)),
                          tuple(image_shape), mesh)
    return ckpt.restore(manager, step, {item: getattr(like, item)})[item]
  finally:
    manager.close()


def batch_indices(num_images: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Rows of step ``step``'s batch: a slice of its epoch's permutation (incomplete tail dropped)."""
  per_epoch = num_images // batch_size
  epoch, i = divmod(int(step), per_epoch)
  perm = _permutation(num_images, int(seed), epoch)
  return perm[i * batch_size:(i + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _permutation(num_images: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_images)


def device_batch(images: np.ndarray, rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """The global batch ``images[rows]`` as an array sharded by ``sharding`` (this process's rows)."""
  per_process = len(rows) // jax.process_count()
  mine = rows[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
  return jax.make_array_from_process_local_data(sharding, images[mine],
                                                (len(rows), *images.shape[1:]))


def _load_images(config) -> np.ndarray:
  from golddiff_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  images = data_lib.load_images(config.data).images
  log.info("loaded %d training images of shape %s", images.shape[0], images.shape[1:])
  return images


def _trim_metrics(path: str, step: int) -> None:
  """Drops log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  outputs.atomic_write(path, lambda f: f.writelines(lines), mode="w")


def train(config, workdir: str, *, images: np.ndarray | None = None) -> dict:
  """Trains (or resumes) the configured network in ``workdir``; returns the final metrics.

  ``images`` [N, H, W, C] in [−1, 1] replaces loading ``config.data`` (tests, notebooks).
  Raises ValueError for a bad config, a workdir that cannot be written, or data or checkpoints
  that do not fit the configured network.
  """
  mesh = make_mesh(config.mesh.data)
  check_config(config, mesh.size)
  t = config.train
  workdir = ensure_workdir(workdir)
  images = _load_images(config) if images is None else np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[0] < t.batch_size:
    raise ValueError(f"need images [N, H, W, C] with N >= train.batch_size={t.batch_size}; got "
                     f"{images.shape}")
  if not np.isfinite(images).all():
    raise ValueError("training images contain NaN or Inf")
  image_shape = tuple(int(s) for s in images.shape[1:])
  arch = arch_of(config)
  if arch.get("kind") != mlp.KIND:
    check_arch(arch, image_shape)
  reg = reg_of(config)

  model, hyper = build_model(arch), hyperparameters(t, reg)
  replicated = NamedSharding(mesh, P())
  init_key, train_key = (jax.device_put(k, replicated)
                         for k in jax.random.split(jax.random.key(config.seed)))
  manager = ckpt.open_manager(os.path.join(workdir, ckpt.SUBDIR), keep=t.keep_checkpoints)
  start = manager.latest_step() or 0
  if start > t.num_steps:
    manager.close()
    raise ValueError(f"workdir {workdir!r} holds a checkpoint at step {start}, past "
                     f"train.num_steps={t.num_steps}: its network was trained for more steps "
                     f"than this config asks. Use another workdir or train.num_steps >= {start}.")
  if start:
    meta = ckpt.read_meta(manager, start)
    if meta["arch"] != arch or meta["image_shape"] != image_shape:
      manager.close()
      raise ValueError(f"workdir {workdir!r} holds a checkpoint of arch {meta['arch']} on "
                       f"{meta['image_shape']} images; this config trains {arch} on "
                       f"{image_shape}. Use another workdir.")
  if jax.process_index() == 0:
    outputs.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    _trim_metrics(os.path.join(workdir, METRICS_FILE), start)
  if start >= t.num_steps:
    log.info("workdir already holds step %d >= train.num_steps=%d; nothing to train", start,
             t.num_steps)
    manager.close()
    return {"step": start, "resumed_from": start, "steps_trained": 0}

  begin = time.perf_counter()
  if start:
    like = abstract_state(model, hyper, image_shape, mesh)
    restored = ckpt.restore(manager, start, {name: getattr(like, name)
                                             for name in ckpt.ARRAY_ITEMS})
    state = TrainState(jax.device_put(jnp.asarray(start, jnp.int32), replicated), **restored)
    log.info("resumed from step %d", start)
  else:
    state = compiled_init(model, hyper, image_shape, mesh)(init_key)
  compiled = compiled_step(model, hyper, image_shape, int(t.batch_size), mesh)
  setup_seconds = time.perf_counter() - begin
  num_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
  log.info("%s %s: %d parameters; state ready and step compiled in %.1f s; %d devices",
           type(model).__name__, arch, num_params, setup_seconds, mesh.size)
  log_keys = ("dsm", "penalty") if reg.active and reg.target in penalties.OUTPUT_TARGETS else ()

  batch_sharding = NamedSharding(mesh, P("data"))
  pending, last = [], {}
  window_start = run_start = time.perf_counter()
  for step in range(start, t.num_steps):
    batch = device_batch(images, batch_indices(len(images), t.batch_size, step, config.seed),
                         batch_sharding)
    state, metrics = compiled(state, batch, train_key)
    pending.append(metrics)
    done = step + 1
    if done % t.log_every == 0 or done == t.num_steps:
      fetched = jax.device_get(pending)
      now = time.perf_counter()
      last = {"step": done, "loss": float(np.mean([m["loss"] for m in fetched])),
              "grad_norm": float(fetched[-1]["grad_norm"]), "lr": float(fetched[-1]["lr"]),
              "steps_per_sec": len(fetched) / (now - window_start),
              **{k: float(np.mean([m[k] for m in fetched])) for k in log_keys}}
      pending, window_start = [], now
      log.info("step %d: loss %.5f, grad_norm %.3f, lr %.2e, %.2f steps/s", done, last["loss"],
               last["grad_norm"], last["lr"], last["steps_per_sec"])
      if jax.process_index() == 0:
        with open(os.path.join(workdir, METRICS_FILE), "a") as f:
          f.write(json.dumps(last) + "\n")
    if done % t.checkpoint_every == 0 or done == t.num_steps:
      ckpt.save(manager, done, {name: getattr(state, name) for name in ckpt.ARRAY_ITEMS},
                ckpt.make_meta(arch, image_shape, done))
  manager.close()

  seconds = time.perf_counter() - run_start
  trained = t.num_steps - start
  summary = {**last, "step": t.num_steps, "resumed_from": start, "steps_trained": trained,
             "train_seconds": seconds, "mean_steps_per_sec": trained / seconds,
             "setup_seconds": setup_seconds, "num_params": num_params,
             "num_devices": mesh.size, "image_shape": list(image_shape)}
  if reg.target != "none":
    summary.update({"reg": dataclasses.asdict(reg), "prox": prox_kind(t, reg),
                    "kernel_zero_fraction": float(penalties.zero_fraction(state.params,
                                                                          reg.exclude)),
                    "ema_kernel_zero_fraction": float(penalties.zero_fraction(
                        state.ema_params, reg.exclude))})
  if jax.process_index() == 0:
    outputs.write_json(os.path.join(workdir, "train_summary.json"), summary)
  return summary
