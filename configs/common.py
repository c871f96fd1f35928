"""Helpers shared by the config files: the ``arg`` parser and the method switch."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

METHODS = ("golddiff", "pca_locality", "optimal", "wiener")


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


def use_method(config: ml_collections.ConfigDict, method: str, *, pca_threshold: float,
               pca_wssm_chunk: int, published: bool = False) -> None:
  """Switches ``config`` to ``method`` with the dataset's baseline settings (spec §6, Q-14).

  ``pca_locality`` gets the baseline θ; with ``published`` it uses the published biased WSSM
  over ``pca_wssm_chunk``-sized chunks instead of the exact softmax.
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; valid methods: {list(METHODS)}")
  config.method = method
  if method == "pca_locality":
    config.denoiser.mask_threshold = pca_threshold
    config.denoiser.wssm_chunk = pca_wssm_chunk
    if published:
      config.denoiser.softmax = "wssm"


def dataset_config(arg: str | None, *, dataset: str, k_min: int, k_max: int,
                   mask_threshold: float, batch_size: int, pca_threshold: float,
                   pca_wssm_chunk: int, resolution: int | None = None,
                   stats_chunk_size: int = 256) -> ml_collections.ConfigDict:
  """The default config with one dataset's published settings (spec §6) and ``arg`` applied.

  ``arg`` keys: method, published, samples, steps, subset (the first n images; 0 = the whole
  split; a subset scales the budgets with N as round(N/20), round(N/10)).
  """
  from configs import default  # pylint: disable=g-import-not-at-top (default imports common)

  arg = parse_arg(arg, method="golddiff", published=False, samples=128, steps=10, subset=0)
  config = default.get_config()
  config.data.dataset = dataset
  if resolution is not None:
    config.data.resolution = resolution
  config.data.subset_size = arg.subset or None
  config.stats.chunk_size = stats_chunk_size
  config.golden.k_min, config.golden.k_max = (None, None) if arg.subset else (k_min, k_max)
  config.golden.low_res_dim = 16
  config.denoiser.mask_threshold = mask_threshold
  config.denoiser.temperature = 1.0
  config.sampler.num_steps = arg.steps
  config.sampler.num_samples = arg.samples
  config.sampler.batch_size = batch_size
  config.seed = 7
  use_method(config, arg.method, pca_threshold=pca_threshold, pca_wssm_chunk=pca_wssm_chunk,
             published=arg.published)
  return config
