"""One run of the sparsity study: train the MLP ε-model on toy data, then measure quality vs K.
(A config with ``data.kind = "digits"`` is the image run, `golddiff_jax.sparsity.digits`.)

    from golddiff_jax.sparsity import study
    metrics = study.run(config, workdir)     # config: configs/sparsity/toy.py

Steps: draw the toy data (`toy_data`, seeded by ``config.seed``); train with the project's
trainer (`golddiff_jax.models.train`, which adds the ``reg`` penalty; resumes from checkpoints);
restore the EMA (or raw) parameters; for every sampler in ``eval.samplers`` and K in ``eval.ks``
draw ``eval.num_samples`` points from the same latents and score them against the held-out split
(`golddiff_jax.sparsity.metrics`). The workdir gets the trainer's files plus ``metrics.json``
(written last: a run is finished when it exists) with one record per (sampler, K), the floor
(a fresh draw of the data scored the same way), the training summary and the seconds spent.
Every check runs before anything is written.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import metrics as image_metrics, outputs
from golddiff_jax.models import train
from golddiff_jax.sparsity import digits, metrics, samplers, toy_data
from golddiff_jax.workdirs import ensure_workdir

METRICS_FILE = "metrics.json"
FLOOR_SEED_OFFSET = 1_000_003   # the floor's fresh draw: its own seed stream


def spec_of(config) -> toy_data.ToySpec:
  d = config.data
  return toy_data.ToySpec(kind=str(d.kind), d=int(d.d), s=int(d.s), delta=float(d.delta))


def check_config(config) -> None:
  """Raises ValueError for any setting this run cannot honour (before anything is written)."""
  spec_of(config)
  train.check_config(config, train.make_mesh(config.mesh.data).size)
  samplers.check_eval(config.eval)
  e = config.eval
  if int(e.num_samples) < 2 or int(config.data.n_test) < 2:
    raise ValueError("eval.num_samples and data.n_test must be >= 2")
  if int(config.data.n_train) < int(config.train.batch_size):
    raise ValueError(f"data.n_train={config.data.n_train} is smaller than train.batch_size")


def score(x: np.ndarray, test: np.ndarray, spec: toy_data.ToySpec, *, num_directions: int,
          seed: int) -> dict:
  """Every metric of generated points ``x`` [n, d] against the held-out ``test`` [m, d]."""
  if not np.isfinite(x).all():
    return {"finite": False}
  xb, tb = toy_data.to_basis(x, spec), toy_data.to_basis(test, spec)
  active = spec.active()
  labels = metrics.mode_labels(xb[:, active], toy_data.centers(), toy_data.MODE_STD)
  cover = metrics.mode_coverage(labels, spec.num_modes)
  ratio = metrics.variance_ratio(xb, tb)
  inactive = np.setdiff1d(np.arange(spec.d), active)
  return {
      "finite": True,
      "sw2": metrics.sliced_w2(x, test, num_directions=num_directions, seed=seed),
      "mmd2": metrics.rbf_mmd2(x, test),
      "off_support_energy": metrics.off_support_energy(xb, active),
      "on_support_sw2": metrics.sliced_w2(xb[:, active], tb[:, active],
                                          num_directions=num_directions, seed=seed),
      "mode_coverage": cover["coverage"], "off_mode_fraction": cover["off_mode"],
      "mode_mass_min": float(np.min(cover["mass"])),
      "variance_ratio_active": float(np.mean(ratio[active])),
      "inactive_std": float(np.sqrt(np.mean(xb[:, inactive].var(0)))) if len(inactive) else 0.0,
  }


def nearest_train(x: np.ndarray, train_x: np.ndarray) -> float:
  """Mean distance to the nearest training point (model space, via the project's metric)."""
  m = image_metrics.memorization(x, train_x)
  return 2.0 * m["nearest_distance_mean"]   # memorization works in unit space, (x + 1)/2


def run(config, workdir: str) -> dict:
  """Trains (or resumes) and evaluates one configuration; returns the ``metrics.json`` dict."""
  if config.data.kind == digits.KIND:
    return digits.run(config, workdir)
  check_config(config)
  spec = spec_of(config)
  workdir = ensure_workdir(workdir)
  seed = int(config.seed)
  x_train, x_test, _ = toy_data.splits(spec, int(config.data.n_train), int(config.data.n_test),
                                       seed)
  image_shape = (spec.d, 1, 1)
  begin = time.perf_counter()
  summary = train.train(config, workdir, images=x_train.reshape(-1, *image_shape))
  train_seconds = time.perf_counter() - begin
  params = train.restore_params(config, workdir, image_shape,
                                "ema_params" if config.eval.params == "ema" else "params")
  model = train.build_model(train.arch_of(config))
  eps_fn = samplers.network_eps(model)
  n = int(config.eval.num_samples)
  root = jax.random.fold_in(jax.random.key(seed), 7)   # sampling streams (training uses split)
  k_lat, k_noise = jax.random.split(root)
  latents = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_lat, i),
                                                 image_shape))(jnp.arange(n))
  num_dir = int(config.eval.num_directions)
  floor_x, _ = toy_data.sample(spec, n, seed + FLOOR_SEED_OFFSET)
  floor = score(floor_x, x_test, spec, num_directions=num_dir, seed=seed)
  floor["nearest_train"] = nearest_train(floor_x, x_train)

  records, eval_begin = [], time.perf_counter()
  for sampler in config.eval.samplers:
    for k in config.eval.ks:
      start = time.perf_counter()
      x = samplers.sample(eps_fn, params, latents, k_noise, sampler=sampler, num_steps=int(k))
      x = np.asarray(jax.device_get(x), np.float64).reshape(n, spec.d)
      rec = {"sampler": sampler, "k": int(k),
             **score(x, x_test, spec, num_directions=num_dir, seed=seed)}
      if k == config.eval.ks[-1] and rec["finite"]:
        rec["nearest_train"] = nearest_train(x, x_train)
      rec["seconds"] = time.perf_counter() - start
      records.append(rec)
  result = {"target": config.reg.target, "r": float(config.reg.r), "d": spec.d, "s": spec.s,
            "kind": spec.kind, "delta": spec.delta, "seed": seed,
            "prox": train.prox_kind(config.train, train.reg_of(config)),
            "train": summary, "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - eval_begin, "floor": floor,
            "records": records}
  outputs.write_json(os.path.join(workdir, METRICS_FILE), result)
  return result
