r"""High-noise steps: cheap estimators of the masked softmax against the exact full scan.

  python experiments/high_noise.py --dataset=procedural --num_images=5000 --mask_threshold=0.03
  python experiments/high_noise.py --dataset=mnist5k --mask_threshold=0.02 --mask_variant=floor

For 16 held-out images noised to every t of the 10-step DDIM schedule, each estimator's x̂_0 is
compared with exact full-scan PCA-locality (same mask) from the same x_t:

* ``pool``: GoldDiff's golden subset (random pool of m_t → k_max proxy survivors → k_t nearest),
  budgets k = N/20 … N/10 (the paper's);
* ``expansion``: `golddiff_jax.high_noise` — the first-order expansion over all N (cost O(B·D²));
* ``tail``: the golden subset plus r uniform samples from the images outside it, each weighted
  (N − k_t)/r, an importance-weighted estimate of the excluded softmax mass (as kNN score
  estimators do);
* ``lowrank R``: the full scan with the mask replaced by its best rank-R approximation (SVD),
  reported with the fraction of the mask's squared Frobenius norm the rank keeps. Its accuracy is
  measured with the dense product (the factorised form would cost O(B·N·D·R) plus the
  O(B·N·D) softmax over all N).

Errors: ``rel`` = ‖x̂ − x̂_exact‖ / ‖x̂_exact − ȳ‖ (relative to the exact estimate's deviation from
the data mean ȳ, the part that depends on x_t) and the MSE. Times are jitted, best of two (the
exact full scan: one call, compile included), on this (shared) machine.
"""

import functools
import json
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import golddiff_jax as gd
from golddiff_jax import high_noise, masks, retrieval, schedules, softmax
from golddiff_jax.data import procedural_images
from golddiff_jax.denoisers import golddiff, pca_locality

_DATASET = flags.DEFINE_enum("dataset", "procedural", ["procedural", "mnist5k"], "Database.")
_N = flags.DEFINE_integer("num_images", 5000, "Database size N (procedural; mnist5k: 4984).")
_RES = flags.DEFINE_integer("resolution", 32, "Procedural image side.")
_BATCH = flags.DEFINE_integer("batch", 16, "Held-out queries.")
_THRESHOLD = flags.DEFINE_float("mask_threshold", 0.03, "θ.")
_VARIANT = flags.DEFINE_enum("mask_variant", "published", ["published", "floor"],
                             "Mask rule: published, or the eigenvalue floor 1e-3 for real data.")
_TAIL = flags.DEFINE_integer("tail_samples", 128, "r, uniform samples outside the subset.")
_RANKS = flags.DEFINE_list("ranks", ["32", "256"], "Ranks for the low-rank mask.")
_LOWRANK_MIN_T = flags.DEFINE_integer("lowrank_min_t", 700, "Low-rank rows only for t ≥ this.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def load() -> tuple[np.ndarray, np.ndarray]:
  """(database images, held-out queries), both [·, H, W, C] in [-1, 1]."""
  batch = _BATCH.value
  if _DATASET.value == "mnist5k":
    from golddiff_jax.data import builders  # pylint: disable=g-import-not-at-top
    images, _ = builders.read_mnist5k(builders.mnist5k_path())
    images = images.astype(np.float32) / 127.5 - 1.0
  else:
    images = procedural_images(_N.value + batch, _RES.value, _RES.value, 3, seed=_SEED.value)
  return images[:-batch], images[-batch:]


def timed(fn, *args, repeats: int = 2) -> tuple[np.ndarray, float]:
  """(output, best seconds of ``repeats`` calls after a first untimed one; 0: that one)."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  best = time.perf_counter() - start if repeats == 0 else np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return np.asarray(out), best


@functools.partial(jax.jit, static_argnames=("r",))
def _tail_corrected(stats, plan, x_t, key, *, r):
  """Golden subset (its first k_t entries) + r uniform outside samples weighted (N − k_t)/r."""
  batch = x_t.shape[0]
  subset = golddiff.golden_subset(stats, plan, x_t, key)
  n, k = stats.num_images, plan.k
  counted = jnp.arange(plan.size) < k
  inside = jnp.zeros((batch, n), bool).at[jnp.arange(batch)[:, None], subset].max(
      jnp.broadcast_to(counted, subset.shape))
  # r uniform images outside the subset: the r smallest random keys among the excluded rows.
  bits = retrieval.stream_keys(jax.random.fold_in(key, 0x7A11), batch, 0)
  bits = jax.vmap(lambda kk: jax.random.uniform(kk, (n,)))(bits)
  _, outside = jax.lax.top_k(-jnp.where(inside, 2.0, bits), r)
  rows = jnp.take(stats.database, jnp.concatenate([subset, outside], axis=1), axis=0)
  logits = pca_locality.masked_logits(x_t, rows, plan.locality)        # [B, K + r, D]
  log_w = jnp.concatenate([jnp.where(counted, 0.0, -jnp.inf),
                           jnp.full((r,), jnp.log((n - k) / r))])
  logits = logits + log_w[None, :, None]
  state = softmax.update_exact(softmax.init(batch, x_t.shape[1], x_t.shape[1]), logits, rows,
                               weighted=lambda p, v: jnp.sum(p * v, axis=1))
  return softmax.finalize(state)


def main(argv):
  del argv
  images, queries = load()
  stats = gd.fit(images)
  n, dim, batch = stats.num_images, stats.dim, _BATCH.value
  variant = {"published": masks.PUBLISHED,
             "floor": {**masks.PUBLISHED, "eig_floor": 1e-3}}[_VARIANT.value]
  print(f"# {time.strftime('%Y-%m-%d %H:%M')} {_DATASET.value} N={n} {stats.image_shape} "
        f"B={batch} θ={_THRESHOLD.value} mask={_VARIANT.value}")
  start = time.perf_counter()
  moments = jax.block_until_ready(high_noise.database_moments(stats.database))
  print(f"moments: {time.perf_counter() - start:.1f} s (once per run)")
  clean = jnp.asarray(queries.reshape(batch, -1))
  noise = jax.random.normal(jax.random.key(_SEED.value + 5), clean.shape)
  gold_options = golddiff.Options(**variant, mask_threshold=_THRESHOLD.value,
                                  k_min=round(n / 20), k_max=round(n / 10))
  exact_options = pca_locality.Options(**variant, mask_threshold=_THRESHOLD.value)
  pca_apply = jax.jit(pca_locality.apply)
  gold_apply = jax.jit(golddiff.apply)
  expand = jax.jit(high_noise.apply)
  mean = np.asarray(moments.mean)
  rows = []
  print("| t | a_t | k_t | estimator | rel. error | MSE | s/step |")
  print("|---|---|---|---|---|---|---|")
  for t in schedules.ddim_timesteps(10):
    abar = schedules.alpha_bar(int(t))
    x_t = jnp.sqrt(abar) * clean + jnp.sqrt(1 - abar) * noise
    key = jax.random.key(int(t))
    plan = pca_locality.prepare(stats, abar, exact_options, batch)
    exact, exact_s = timed(pca_apply, stats, plan, x_t, repeats=0)  # includes its compile
    scale = np.linalg.norm(exact - mean)
    gold = golddiff.prepare(stats, abar, gold_options, batch)
    mask = masks.mask_for(stats, abar, gold_options.mask_variant())
    estimates = {"exact (full scan)": (exact, exact_s)}
    estimates["pool (GoldDiff)"] = timed(gold_apply, stats, gold, x_t, key)
    estimates["expansion"] = timed(expand, high_noise.prepare(moments, mask, abar), x_t)
    estimates[f"tail (r = {_TAIL.value})"] = timed(
        functools.partial(_tail_corrected, r=_TAIL.value), stats, gold, x_t, key)
    if t >= _LOWRANK_MIN_T.value:
      u, sv, vt = np.linalg.svd(np.asarray(mask))
      energy = np.cumsum(sv ** 2) / np.sum(sv ** 2)
      for rank in (int(r) for r in _RANKS.value):
        low = (u[:, :rank] * sv[:rank]) @ vt[:rank]
        low_plan = pca_locality.build_plan(jnp.asarray(low, jnp.float32), abar, batch,
                                           mask_impl="dense",
                                           temperature=exact_options.temperature)
        out, _ = timed(pca_apply, stats, low_plan, x_t, repeats=0)
        estimates[f"lowrank {rank} (keeps {energy[rank - 1]:.3f})"] = (out, float("nan"))
    for name, (value, seconds) in estimates.items():
      rel = float(np.linalg.norm(value - exact) / scale)
      mse = float(np.mean((value - exact) ** 2))
      rows.append({"t": int(t), "a": float(np.sqrt(abar)), "k": int(gold.k), "estimator": name,
                   "rel_error": rel, "mse": mse, "seconds": seconds})
      print(f"| {t} | {np.sqrt(abar):.3f} | {int(gold.k)} | {name} | {rel:.3f} | {mse:.2e} | "
            f"{seconds:.3f} |", flush=True)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump({"dataset": _DATASET.value, "num_images": n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
