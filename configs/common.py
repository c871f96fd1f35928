"""Helpers shared by the config files: the ``arg`` parser, the option sections and the method
switch."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from golddiff_jax import masks, run_config
from golddiff_jax.denoisers import METHODS  # the registry: method name → its Denoiser


def optional(kind: type, default=None):
  """A ``kind``-typed field that may be None and is still settable from the command line."""
  return config_dict.FieldReference(default, field_type=kind)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"a=1,b=x,flag"`` (the part after ``:`` in ``--config=file.py:arg``).

  Each key must be one of ``defaults``; its value is converted to the default's type (bools
  accept true/false/1/0; a bare key means True). Raises ValueError on unknown keys or bad values.
  """
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; valid arguments: {sorted(defaults)}")
    kind = type(defaults[key])
    if not _:
      value = "true"
    if kind is bool:
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key} must be true or false, got {value!r}")
      result[key] = value.lower() in ("true", "1")
      continue
    try:
      result[key] = kind(value)
    except ValueError as e:
      raise ValueError(f"config argument {key} must be a {kind.__name__}, got {value!r}") from e
  return result


# Locality-mask variants by name (the knobs are explained in golddiff_jax.masks). ``published``
# is the published rule; DEFAULT_MASK is chosen by measurement on real digits (docs/results.md).
MASK_VARIANTS = {
    "published": dict(masks.PUBLISHED),
    # Rows whose diagonal is below 1% of the largest are normalised by that 1%: on data without
    # such near-constant pixels (CIFAR-10, faces, ...) the mask is exactly the published one.
    "floor": {**masks.PUBLISHED, "diag_floor": 0.01},
}
DEFAULT_MASK = "floor"


def add_option_sections(config: ml_collections.ConfigDict) -> None:
  """Adds the ``denoiser`` and ``golden`` sections, generated from the registered methods'
  options (`golddiff_jax.run_config.option_sections`): every field None, i.e. the method's own
  default, until a config file or a ``--config.denoiser.<option>=...`` override sets it."""
  for name, section in run_config.option_sections().items():
    config[name] = section


def use_method(config: ml_collections.ConfigDict, method: str, *,
               thresholds: dict[str, tuple[float, float]], pca_wssm_chunk: int,
               published: bool = False, mask: str = DEFAULT_MASK) -> None:
  """Switches ``config`` to ``method`` with the dataset's settings and mask variant ``mask``.

  ``thresholds[mask]`` is (GoldDiff's θ, PCA-locality's θ) for that variant; a missing variant
  uses the ``published`` pair. With ``published`` PCA-locality uses the published biased WSSM
  over ``pca_wssm_chunk``-sized chunks instead of the exact softmax.
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid methods: {sorted(METHODS)}")
  if mask not in MASK_VARIANTS:
    raise ValueError(f"unknown mask variant {mask!r}; valid: {sorted(MASK_VARIANTS)}")
  config.method = method
  config.denoiser.update(MASK_VARIANTS[mask])
  golddiff_theta, pca_theta = thresholds.get(mask, thresholds["published"])
  config.denoiser.mask_threshold = golddiff_theta
  config.denoiser.wssm_chunk = pca_wssm_chunk
  if method == "pca_locality":
    config.denoiser.mask_threshold = pca_theta
    if published:
      config.denoiser.softmax = "wssm"


def dataset_config(arg: str | None, *, dataset: str, k_min: int, k_max: int,
                   mask_threshold: float, batch_size: int, pca_threshold: float,
                   pca_wssm_chunk: int, resolution: int | None = None,
                   stats_chunk_size: int = 256,
                   floor_thresholds: tuple[float, float] | None = None
                   ) -> ml_collections.ConfigDict:
  """The default config with one dataset's published settings and ``arg`` applied.

  ``mask_threshold`` and ``pca_threshold`` are the published θ of GoldDiff and of the
  PCA-locality baseline; ``floor_thresholds`` the pair for the ``floor`` mask variant (default:
  the published pair).

  ``arg`` keys: method, published, mask (a `MASK_VARIANTS` name), samples, steps, subset (the
  first n images; 0 = the whole split; a subset scales the budgets with N as round(N/20),
  round(N/10)).
  """
  from configs import default  # pylint: disable=g-import-not-at-top (default imports common)

  arg = parse_arg(arg, method="golddiff", published=False, mask=DEFAULT_MASK, samples=128,
                  steps=10, subset=0)
  config = default.get_config()
  config.data.dataset = dataset
  if resolution is not None:
    config.data.resolution = resolution
  config.data.subset_size = arg.subset or None
  config.stats.chunk_size = stats_chunk_size
  config.golden.k_min, config.golden.k_max = (None, None) if arg.subset else (k_min, k_max)
  config.sampler.num_steps = arg.steps
  config.sampler.num_samples = arg.samples
  config.sampler.batch_size = batch_size
  config.seed = 7
  thresholds = {"published": (mask_threshold, pca_threshold)}
  if floor_thresholds is not None:
    thresholds["floor"] = floor_thresholds
  use_method(config, arg.method, thresholds=thresholds, pca_wssm_chunk=pca_wssm_chunk,
             published=arg.published, mask=arg.mask)
  return config
