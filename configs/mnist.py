"""MNIST 28×28×1, train split, N=60000.

Published GoldDiff settings (docs/method.md §7.1): k_min=3000, k_max=6000, θ=0.02, low_res_dim=16
(proxy 14×14).

    python -m golddiff_jax.main --config=configs/mnist.py --workdir=/tmp/mnist
    python -m golddiff_jax.main --config=configs/mnist.py:method=pca_locality,published \\
        --workdir=/tmp/mnist_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.005), published (PCA-locality with the published WSSM over 512-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  # global batch: the published default.
  return common.dataset_config(
      arg,
      dataset="mnist",
      k_min=3000,
      k_max=6000,
      mask_threshold=0.02,
      batch_size=64,
      pca_threshold=0.005,
      pca_wssm_chunk=512,
      # The floored mask's θ measured on the 5,000-digit subset (configs/default.py), not re-measured
      # on all 60,000 digits.
      floor_thresholds=(0.01, 0.01))
