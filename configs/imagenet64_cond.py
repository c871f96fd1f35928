"""Class-conditional ImageNet-1K 64×64×3 (docs/method.md §7.4): the database is one class's images
(~1.3k).

Published GoldDiff settings (docs/method.md §7.1): k_min=60, k_max=120, θ=0.02, low_res_dim=16
(proxy 16×16). The mask statistics (μ, λ, V) are the global ones
(docs/method.md §7.4, Q-16: the published 1.0 mix of global and class statistics), fit on the first
``stats.global_subset_size`` images of the whole split; ``stats=database`` uses the class's own
statistics instead.

    python -m golddiff_jax.main --config=configs/imagenet64_cond.py:cls=207 --workdir=/tmp/in_207

Arguments: cls (class id 0…999; any class works, Q-12), method, published, samples, steps,
stats (global | database). The images come from a manual folder (config.data.manual_dir); see
golddiff_jax/data/datasets.py.
"""

import ml_collections

from configs import common, imagenet64


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, cls=0, method="golddiff", published=False,
                         mask=common.DEFAULT_MASK, samples=128, steps=10, stats="global")
  config = imagenet64.get_config(f"samples={arg.samples},steps={arg.steps}")
  config.data.class_id = arg.cls
  config.stats.source = arg.stats
  config.golden.k_min = 60
  config.golden.k_max = 120
  config.sampler.batch_size = 64
  common.use_method(config, arg.method, thresholds={"published": (0.02, 0.02)},
                    pca_wssm_chunk=256, published=arg.published, mask=arg.mask)
  return config
