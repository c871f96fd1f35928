"""The built-in procedural images: 32×32×3 colour fields generated offline from a seed.

Used by the benchmarks and the tests (any size, no data files). Not real images: judge sample
quality on the real default (configs/default.py) instead.

    python -m golddiff_jax.main --config=configs/procedural.py:n=2000 --workdir=/tmp/proc

Arguments: as configs/default.py, with ``n`` the number of images generated. The budgets are
round(N/20), round(N/10); θ is 0.03 for GoldDiff and 0.05 for PCA-locality (the CIFAR-10 values).
"""

import ml_collections

from configs import common, default

THRESHOLDS = {"published": (0.03, 0.05)}


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, method="golddiff", n=2000, samples=16, steps=10, published=False,
                         mask=common.DEFAULT_MASK)
  config = default.get_config(f"samples={arg.samples},steps={arg.steps}")
  config.data.dataset = "procedural"
  config.data.num_images = arg.n
  config.data.subset_size = None
  common.use_method(config, arg.method, thresholds=THRESHOLDS, pca_wssm_chunk=512,
                    published=arg.published, mask=arg.mask)
  return config
