r"""Accuracy against float64: ours (float32 JAX) vs an emulation of the published float32 code.

  python experiments/agreement.py --num_images=1000 --resolution=16 --channels=3 --batch=8

For every DDIM timestep, held-out images (not in the database) are noised to x_t, and each denoiser's
x̂_0 is compared with a float64 NumPy implementation of the formulas in docs/method.md
(float64 moments, eigh, float64 mask and softmax). The "published float32" column emulates the
released PyTorch code's arithmetic in NumPy float32: float32 covariance accumulation, SVD, L̃ = U
diag(s) Vh, and the dense masked product and softmax in float32. For the optimal denoiser the
released baseline is also truncated to the 200 nearest neighbours (quirk Q-9), shown in its own
column. Reported: max |x̂_0 − x̂_0^f64| over the batch and all coordinates.
"""

import time

from absl import app, flags
import jax
import numpy as np

import golddiff_jax as gd
from golddiff_jax import schedules
from golddiff_jax.data import procedural_images

_N = flags.DEFINE_integer("num_images", 1000, "Database size N.")
_RES = flags.DEFINE_integer("resolution", 16, "Image height and width.")
_CH = flags.DEFINE_integer("channels", 3, "Image channels.")
_BATCH = flags.DEFINE_integer("batch", 8, "Held-out queries.")
_THRESHOLD = flags.DEFINE_float("mask_threshold", 0.05, "PCA-locality θ.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")


def moments(x, dtype):
  x = x.astype(dtype)
  mean = x.mean(0)
  c = x - mean
  return mean, (c.T @ c) / (len(x) - 1)


def operator(cov, abar, dtype, use_svd):
  if use_svd:
    u, lam, vh = np.linalg.svd(cov.astype(dtype))
  else:
    lam, u = np.linalg.eigh(cov.astype(dtype))
    lam = np.clip(lam, 0, None)
    vh = u.T
  abar = dtype(abar)
  s = abar * lam / ((dtype(1) - abar) + abar * lam)
  return ((u * s) @ vh).astype(dtype)


def mask(op, theta):
  op = op.copy()
  g = np.diagonal(op).copy()
  small = np.abs(g) < 1e-6
  g[small] = 1
  np.fill_diagonal(op, np.where(small, 1, np.diagonal(op)))
  m = op / g[:, None]
  return (np.abs(m) >= theta * np.abs(m).max()).astype(op.dtype)


def softmax_mean(logits, values, axis):
  logits = logits - logits.max(axis=axis, keepdims=True)
  w = np.exp(logits)
  w /= w.sum(axis=axis, keepdims=True)
  return w, values


def optimal(db, x, abar, dtype, num_neighbors=None):
  """Exact posterior mean; with num_neighbors, the published kNN-truncated softmax (Q-9)."""
  a, s2 = np.sqrt(dtype(abar)), dtype(1) - dtype(abar)
  d = ((x[:, None, :] - a * db[None]) ** 2).sum(-1)
  if num_neighbors is not None and num_neighbors < d.shape[1]:
    far = np.argsort(d, axis=1)[:, num_neighbors:]
    np.put_along_axis(d, far, np.inf, axis=1)
  w, _ = softmax_mean(-d / (2 * s2), None, axis=1)
  return w @ db


def wiener(mean, op, x, abar, dtype):
  a = np.sqrt(dtype(abar))
  return (x / a - mean) @ op.T + mean


def pca(db, m, x, abar, dtype):
  a, s2 = np.sqrt(dtype(abar)), dtype(1) - dtype(abar)
  out = []
  for xb in x:
    dist = ((xb[None] - a * db) ** 2) @ m
    w, _ = softmax_mean(-dist / (2 * s2), None, axis=0)
    out.append((w * db).sum(0))
  return np.stack(out)


def main(argv):
  del argv
  n, res, ch, b = _N.value, _RES.value, _CH.value, _BATCH.value
  allx = procedural_images(n + b, res, res, ch, seed=_SEED.value).reshape(n + b, -1)
  db, held = allx[:n], allx[n:]
  stats = gd.fit(db.reshape(n, res, res, ch))
  rng = np.random.default_rng(_SEED.value)
  eps = rng.standard_normal(held.shape)
  f64 = {"db": db.astype(np.float64)}
  f64["mean"], f64["cov"] = moments(db, np.float64)
  f32 = {"db": db.astype(np.float32)}
  f32["mean"], f32["cov"] = moments(db, np.float32)
  print(f"# {time.strftime('%Y-%m-%d')} N={n} {res}x{res}x{ch} B={b} θ={_THRESHOLD.value}")
  print("| t | method | ours (float32 JAX) | docs/method.md formula in NumPy float32 (SVD mask) "
        "| published optimal: kNN-200 softmax (Q-9) |")
  print("|---|---|---|---|---|")
  for t in schedules.ddim_timesteps(10):
    if t < 100:
      continue
    abar = schedules.alpha_bar(t)
    x32 = (np.sqrt(abar) * held.astype(np.float64) + np.sqrt(1 - abar) * eps).astype(np.float32)
    x64 = x32.astype(np.float64)  # same input for every column: only the arithmetic differs
    op64 = operator(f64["cov"], abar, np.float64, use_svd=False)
    op32 = operator(f32["cov"], abar, np.float32, use_svd=True)
    refs = {
        "optimal": (optimal(f64["db"], x64, abar, np.float64),
                    optimal(f32["db"], x32, abar, np.float32), {}),
        "knn": optimal(f32["db"], x32, abar, np.float32, num_neighbors=200),
        "wiener": (wiener(f64["mean"], op64, x64, abar, np.float64),
                   wiener(f32["mean"], op32, x32, abar, np.float32), {}),
        "pca_locality": (pca(f64["db"], mask(op64, _THRESHOLD.value), x64, abar, np.float64),
                         pca(f32["db"], mask(op32, _THRESHOLD.value), x32, abar, np.float32),
                         {"mask_threshold": _THRESHOLD.value, "mask_impl": "dense"}),
    }
    knn = refs.pop("knn")
    for method, (ref, published, opts) in refs.items():
      ours = np.asarray(gd.denoise(stats, x32.reshape(b, res, res, ch), int(t), method=method,
                                   **opts)).reshape(b, -1)
      print(f"| {t} | {method} | {np.abs(ours - ref).max():.2e} | "
            f"{np.abs(published - ref).max():.2e} | "
            + (f"{np.abs(knn - ref).max():.2e} |" if method == "optimal" else "— |"), flush=True)


if __name__ == "__main__":
  app.run(main)
