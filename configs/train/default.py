"""Reference U-Net training on the embedded offline data (mnist5k: 5,000 real digits, 28×28×1).

    python experiments/train_reference.py --config=configs/train/default.py \
        --workdir=workdir/reference_mnist5k
    python experiments/train_reference.py --config=configs/train/default.py \
        --workdir=/tmp/ref --config.train.num_steps=200 --config.mesh.data=1

A small U-Net (ch=16, ch_mult=(1, 2, 2), 0.39M parameters): 3000 steps at batch 32 (19 epochs),
about 70 minutes on 2 busy CPU cores (docs/reference.md); good enough to rank analytical
denoisers against, not a generative model of record.
The per-dataset configs (configs/train/<dataset>.py) use the published sizes (docs/method.md §8.1);
`base_config` holds the settings they share.

Sections:

* ``data``: the images, exactly the ``data`` section of configs/default.py;
* ``model``: the `golddiff_jax.models.unet.UNet` fields;
* ``train``: batch, steps, AdamW with linear warm-up, gradient clipping, EMA, logging, checkpoints;
* ``mesh``: devices on the ``data`` axis (-1: all); train.batch_size must divide by it.
"""

import ml_collections

import configs.default


def base_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The shared skeleton, with the DDPM training settings of docs/reference.md; datasets change
  fields."""
  config = ml_collections.ConfigDict()
  config.seed = 0               # init, data order, t/ε/dropout streams
  config.data = data

  config.model = ml_collections.ConfigDict()
  config.model.ch = 128
  config.model.ch_mult = (1, 2, 3, 4)
  config.model.num_res_blocks = 2
  config.model.dropout = 0.15
  config.model.num_groups = 32

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128
  config.train.num_steps = 100_000
  config.train.learning_rate = 2e-4
  config.train.warmup_steps = 5000
  config.train.weight_decay = 0.0   # AdamW decoupled decay (0: plain Adam, as DDPM)
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.grad_clip = 1.0      # clip_by_global_norm
  config.train.ema_decay = 0.9999   # with warm-up min(decay, (1+n)/(10+n))
  config.train.log_every = 100
  config.train.checkpoint_every = 5000
  config.train.keep_checkpoints = 3

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  return config


def get_config() -> ml_collections.ConfigDict:
  config = base_config(configs.default.get_config().data)
  # ~0.7–1.3 steps/s at batch 32 on 2 busy CPU cores (docs/reference.md).
  config.model.ch = 16
  config.model.ch_mult = (1, 2, 2)
  config.model.dropout = 0.1
  config.model.num_groups = 4
  config.train.batch_size = 32
  config.train.num_steps = 3000
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.ema_decay = 0.995   # a ~200-step window: short training, fast-moving weights
  config.train.log_every = 25
  config.train.checkpoint_every = 200
  return config
