"""Reference U-Net training on Fashion-MNIST 28×28×1 (N=60000), docs/method.md §8.1 sizes.

    python experiments/train_reference.py --config=configs/train/fashion_mnist.py \
        --workdir=workdir/reference_fashion_mnist

Network: ch=64, ch_mult=(1, 2, 2), 2 ResBlocks per level, dropout 0.15, 32 groups. Training: the
published checkpoint is "epoch 200"; here 200 epochs at batch 128 = 93750 steps, AdamW (lr 2e-4,
5000 warm-up steps), gradient clipping at 1, EMA 0.9999. The data section is
configs/fashion_mnist.py's, so the network trains on exactly the images the analytical methods use.
"""

import ml_collections

import configs.fashion_mnist
from configs.train import default


def get_config() -> ml_collections.ConfigDict:
  config = default.base_config(configs.fashion_mnist.get_config().data)
  config.model.ch = 64
  config.model.ch_mult = (1, 2, 2)
  config.train.num_steps = 93750   # 200 epochs of 60000 images at batch 128
  return config
