"""AFHQv2 train (cat, dog, wild) at 64×64×3 (manual download), N≈14.6k.

Published GoldDiff settings (docs/method.md §7.1): k_min=1000, k_max=2000, θ=0.04, low_res_dim=16
(proxy 16×16).

    python -m golddiff_jax.main --config=configs/afhq.py --workdir=/tmp/afhq
    python -m golddiff_jax.main --config=configs/afhq.py:method=pca_locality,published \\
        --workdir=/tmp/afhq_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.02), published (PCA-locality with the published WSSM over 256-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).

The images come from a manual folder (config.data.manual_dir); see golddiff_jax/data/datasets.py.
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  # global batch: the published comment's value.
  return common.dataset_config(
      arg,
      dataset="afhq",
      resolution=64,
      k_min=1000,
      k_max=2000,
      mask_threshold=0.04,
      batch_size=32,
      pca_threshold=0.02,
      pca_wssm_chunk=256)
