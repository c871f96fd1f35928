"""Sparsity-regularised DDPM on the toy data (one (target, r, d, seed) run; docs/sparsity.md).

    python experiments/sparsity_run.py --config=configs/sparsity/toy.py:target=x0,r=1e-3,d=128 \\
        --workdir=workdir/sparsity/x0_d128

Arguments after ``:``: ``target`` (none | weights | score | eps | x0), ``r``, ``d``, ``s``,
``seed``, ``kind`` (sparse | rotated | toy3d), ``delta`` (inactive-coordinate std), ``group``
(none | first_layer_rows), ``optimizer`` (adamw | sgd), ``steps`` (training steps).

Sections: ``data`` (the toy generator and split sizes), ``model`` (the MLP ε-model), ``train``
(the shared trainer, `golddiff_jax.models.train`), ``reg`` (the penalty), ``eval`` (samplers, the
K grid, sample counts), ``mesh``. The screen-sized defaults (width 128, 3000 steps of batch 256)
train in well under a minute on 2 CPU cores; the paper-sized settings of docs/sparsity.md
(width 256/512, 10k/40k steps) are ``--config.model.width=256 --config.train.num_steps=10000``.
"""

import ml_collections

from configs import common

K_GRID = (4, 6, 8, 12, 16, 24, 32, 48, 64, 100, 200, 500, 1000)
SCREEN_K = (4, 8, 16, 32, 64, 200, 1000)


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, target="none", r=0.0, d=8, s=2, seed=0, kind="sparse", delta=0.0,
                         group="none", optimizer="adamw", steps=3000)
  config = ml_collections.ConfigDict()
  config.seed = arg.seed        # init, data draw, training streams, sampler noise

  config.data = ml_collections.ConfigDict()
  config.data.kind = arg.kind
  config.data.d = arg.d
  config.data.s = arg.s
  config.data.delta = arg.delta
  config.data.n_train = 50_000
  config.data.n_test = 1_000

  config.model = ml_collections.ConfigDict()
  config.model.kind = "mlp"
  config.model.width = 128
  config.model.depth = 3
  config.model.temb_dim = 128
  config.model.skip = True      # time-gated per-coordinate linear skip (models/mlp.py)

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 256
  config.train.num_steps = arg.steps
  config.train.optimizer = arg.optimizer
  config.train.learning_rate = 1e-3
  config.train.lr_decay = "cosine"
  config.train.warmup_steps = 100
  config.train.weight_decay = 0.0
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.grad_clip = 1.0
  config.train.ema_decay = 0.995
  config.train.log_every = 250
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 1

  config.reg = ml_collections.ConfigDict()
  config.reg.target = arg.target
  config.reg.r = arg.r
  config.reg.t_weight = "snr"
  config.reg.group = arg.group
  config.reg.exclude = ("bias", "norm", "time")

  config.eval = ml_collections.ConfigDict()
  config.eval.samplers = ("ddpm",)
  config.eval.ks = SCREEN_K
  config.eval.num_samples = 1_000      # compared with the n_test held-out points
  config.eval.num_directions = 256     # sliced W2
  config.eval.params = "ema"           # ema | raw

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = 1
  return config
