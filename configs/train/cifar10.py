"""Reference U-Net training on CIFAR-10 32×32×3 (N=50000), docs/method.md §8.1 sizes.

    python experiments/train_reference.py --config=configs/train/cifar10.py \
        --workdir=workdir/reference_cifar10

Network: ch=128, ch_mult=(1, 2, 3, 4), 2 ResBlocks per level, dropout 0.15, 32 groups. Training: the
published checkpoint is "epoch 200"; here 200 epochs at batch 128 = 78125 steps, AdamW (lr 2e-4,
5000 warm-up steps), gradient clipping at 1, EMA 0.9999. The data section is configs/cifar10.py's,
so the network trains on exactly the images the analytical methods use.
"""

import ml_collections

import configs.cifar10
from configs.train import default


def get_config() -> ml_collections.ConfigDict:
  config = default.base_config(configs.cifar10.get_config().data)
  config.model.ch = 128
  config.model.ch_mult = (1, 2, 3, 4)
  config.train.num_steps = 78125   # 200 epochs of 50000 images at batch 128
  return config
