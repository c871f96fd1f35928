"""Unconditional ImageNet-1K 64×64×3 (manual download), N=1.28M.

Published GoldDiff settings (docs/method.md §7.1): k_min=10000, k_max=20000
(from a published config comment; the published code never ran it), θ=0.02, low_res_dim=16
(proxy 16×16).

    python -m golddiff_jax.main --config=configs/imagenet64.py --workdir=/tmp/imagenet64
    python -m golddiff_jax.main --config=configs/imagenet64.py:method=pca_locality,published \\
        --workdir=/tmp/imagenet64_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.02), published (PCA-locality with the published WSSM over 256-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).

The full database is 63 GB in float32; use subset=... on smaller machines. The images come
from a manual folder (config.data.manual_dir); see golddiff_jax/data/datasets.py.
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  # global batch: the published default.
  return common.dataset_config(
      arg,
      dataset="imagenet64",
      k_min=10000,
      k_max=20000,
      mask_threshold=0.02,
      batch_size=64,
      pca_threshold=0.02,
      pca_wssm_chunk=256,
      stats_chunk_size=128)
