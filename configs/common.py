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
