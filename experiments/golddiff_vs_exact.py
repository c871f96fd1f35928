r"""How closely GoldDiff tracks the exact full-scan PCA-locality denoiser from the same noise.

  python experiments/golddiff_vs_exact.py --num_images=5000 --batch=16

Both methods sample the same latents with the same θ; the final images (and every step's x̂_0) are
compared with the paper's metrics
(docs/method.md §8.4: images mapped by clamp((x+1)/2, 0, 1), MSE, and r² with the unbiased
per-sample variance of the reference). Queries are fresh noise, so the check is on data the database
never saw. k_min/k_max default to the paper's N/20 and N/10.
"""

import time

from absl import app, flags
import jax
import numpy as np

import golddiff_jax as gd
from golddiff_jax import metrics
from golddiff_jax.data import procedural_images

_N = flags.DEFINE_integer("num_images", 5000, "Database size N.")
_RES = flags.DEFINE_integer("resolution", 32, "Image height and width.")
_CH = flags.DEFINE_integer("channels", 3, "Image channels.")
_BATCH = flags.DEFINE_integer("batch", 16, "Samples.")
_THRESHOLD = flags.DEFINE_float("mask_threshold", 0.03, "θ for both methods.")
_K_MIN = flags.DEFINE_integer("k_min", None, "GoldDiff k_min (default N/20).")
_K_MAX = flags.DEFINE_integer("k_max", None, "GoldDiff k_max (default N/10).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_HIGH_NOISE = flags.DEFINE_list("high_noise", ["pool"], "GoldDiff high_noise settings to run "
                                "side by side (pool, expansion).")


def paper_metrics(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(MSE, r²) of x against the reference y, per docs/method.md §8.4 (`golddiff_jax.metrics`)."""
  return metrics.mse(x, y), metrics.r2(x, y)


def main(argv):
  del argv
  n, res, ch = _N.value, _RES.value, _CH.value
  stats = gd.fit(procedural_images(n, res, res, ch, seed=_SEED.value))
  latents = gd.noise(jax.random.key(_SEED.value + 7), _BATCH.value, stats.image_shape)
  key = jax.random.key(_SEED.value + 1)
  exact = gd.sample(stats, latents, method="pca_locality", mask_threshold=_THRESHOLD.value)
  golds = {mode: gd.sample(stats, latents, method="golddiff", key=key,
                           mask_threshold=_THRESHOLD.value, k_min=_K_MIN.value,
                           k_max=_K_MAX.value, high_noise=mode)
           for mode in _HIGH_NOISE.value}
  print(f"# {time.strftime('%Y-%m-%d')} N={n} {res}x{res}x{ch} B={_BATCH.value} "
        f"θ={_THRESHOLD.value} k_min={_K_MIN.value or 'N/20'} k_max={_K_MAX.value or 'N/10'}")
  for mode, gold in golds.items():
    print(f"\nGoldDiff high_noise={mode}")
    print("| t | MSE | r² | exact s/step | golddiff s/step |")
    print("|---|---|---|---|---|")
    for j, t in enumerate(exact.timesteps):
      mse, r2 = paper_metrics(gold.x0_trajectory[j], exact.x0_trajectory[j])
      print(f"| {t} | {mse:.2e} | {r2:.4f} | {exact.step_seconds[j]:.2f} | "
            f"{gold.step_seconds[j]:.3f} |")
    mse, r2 = paper_metrics(gold.images, exact.images)
    print(f"final images: MSE {mse:.2e}, r² {r2:.4f}; mean s/step exact "
          f"{exact.step_seconds.mean():.2f}, golddiff {gold.step_seconds.mean():.3f} "
          f"(x{exact.step_seconds.mean() / gold.step_seconds.mean():.1f})")

if __name__ == "__main__":
  app.run(main)
