"""CIFAR-10 32×32×3, train split, N=50000.

Published GoldDiff settings (docs/method.md §7.1): k_min=2500, k_max=5000, θ=0.03, low_res_dim=16
(proxy 16×16).

    python -m golddiff_jax.main --config=configs/cifar10.py --workdir=/tmp/cifar10
    python -m golddiff_jax.main --config=configs/cifar10.py:method=pca_locality,published \\
        --workdir=/tmp/cifar10_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.05), published (PCA-locality with the published WSSM over 512-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  # global batch: the published comment's value.
  return common.dataset_config(
      arg,
      dataset="cifar10",
      k_min=2500,
      k_max=5000,
      mask_threshold=0.03,
      batch_size=16,
      pca_threshold=0.05,
      pca_wssm_chunk=512)
