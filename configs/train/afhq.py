"""Reference U-Net training on AFHQv2 64×64×3 (manual download, N≈14.6k), docs/method.md §8.1 sizes.

    python experiments/train_reference.py --config=configs/train/afhq.py \
        --workdir=workdir/reference_afhq

Network: ch=128, ch_mult=(1, 2, 3, 4), 2 ResBlocks per level, dropout 0.15, 32 groups. Training: the
published checkpoint is "epoch 200"; here 200 epochs at batch 128 = 22860 steps, AdamW (lr 2e-4,
5000 warm-up steps), gradient clipping at 1, EMA 0.9999. The data section is configs/afhq.py's, so
the network trains on exactly the images the analytical methods use.
"""

import ml_collections

import configs.afhq
from configs.train import default


def get_config() -> ml_collections.ConfigDict:
  config = default.base_config(configs.afhq.get_config().data)
  config.model.ch = 128
  config.model.ch_mult = (1, 2, 3, 4)
  config.train.num_steps = 22860   # 200 epochs of 14630 images at batch 128
  return config
