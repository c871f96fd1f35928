"""Fashion-MNIST 28×28×1, train split, N=60000.

Spec §6 GoldDiff settings: k_min=3000, k_max=6000, θ=0.02, low_res_dim=16 (proxy 14×14).

    python -m golddiff_jax.main --config=configs/fashion_mnist.py --workdir=/tmp/fashion_mnist
    python -m golddiff_jax.main --config=configs/fashion_mnist.py:method=pca_locality,published \\
        --workdir=/tmp/fashion_mnist_pca

Arguments: method (golddiff | pca_locality | optimal | wiener; pca_locality takes the baseline
θ=0.005), published (PCA-locality with the published WSSM over 512-image chunks, Q-14),
samples, steps, subset (database size, the first n images; 0: the whole split; a subset
scales the budgets with N: k_min, k_max = round(N/20), round(N/10)).
"""

import ml_collections

from configs import common, default


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, method="golddiff", published=False, samples=128, steps=10,
                         subset=0)
  config = default.get_config()
  config.data.dataset = "fashion_mnist"
  config.data.subset_size = arg.subset or None
  config.stats.chunk_size = 256
  config.golden.k_min = 3000
  config.golden.k_max = 6000
  config.golden.low_res_dim = 16
  config.denoiser.mask_threshold = 0.02
  config.denoiser.temperature = 1.0
  if arg.subset:
    config.golden.k_min = config.golden.k_max = None
  config.sampler.num_steps = arg.steps
  config.sampler.num_samples = arg.samples
  config.sampler.batch_size = 32  # global batch (the published comment's value)
  config.seed = 7
  common.use_method(config, arg.method, pca_threshold=0.005, pca_wssm_chunk=512,
                    published=arg.published)
  return config
