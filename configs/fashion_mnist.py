"""Fashion-MNIST 28×28×1, train split, N=60000.

Published GoldDiff settings (docs/method.md §7.1): k_min=3000, k_max=6000, θ=0.02, low_res_dim=16
(proxy 14×14).

    python -m golddiff_jax.main --config=configs/fashion_mnist.py --workdir=/tmp/fashion_mnist
    python -m golddiff_jax.main --config=configs/fashion_mnist.py:method=pca_locality,published \\
        --workdir=/tmp/fashion_mnist_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.005), published (PCA-locality with the published WSSM over 512-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  # global batch: the published comment's value.
  return common.dataset_config(
      arg,
      dataset="fashion_mnist",
      k_min=3000,
      k_max=6000,
      mask_threshold=0.02,
      batch_size=32,
      pca_threshold=0.005,
      pca_wssm_chunk=512)
