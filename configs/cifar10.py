"""CIFAR-10 32×32×3, train split, N=50000.

Spec §6 GoldDiff settings: k_min=2500, k_max=5000, θ=0.03, low_res_dim=16 (proxy 16×16).

    python -m golddiff_jax.main --config=configs/cifar10.py --workdir=/tmp/cifar10
    python -m golddiff_jax.main --config=configs/cifar10.py:method=pca_locality,published \\
        --workdir=/tmp/cifar10_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.05), published (PCA-locality with the published WSSM over 512-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).
"""

import ml_collections

from configs import common, default


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, method="golddiff", published=False, samples=128, steps=10,
                         subset=0)
  config = default.get_config()
  config.data.dataset = "cifar10"
  config.data.subset_size = arg.subset or None
  config.stats.chunk_size = 256
  config.golden.k_min = 2500
  config.golden.k_max = 5000
  config.golden.low_res_dim = 16
  config.denoiser.mask_threshold = 0.03
  config.denoiser.temperature = 1.0
  if arg.subset:
    config.golden.k_min = config.golden.k_max = None
  config.sampler.num_steps = arg.steps
  config.sampler.num_samples = arg.samples
  config.sampler.batch_size = 16  # global batch (the published comment's value)
  config.seed = 7
  common.use_method(config, arg.method, pca_threshold=0.05, pca_wssm_chunk=512,
                    published=arg.published)
  return config
