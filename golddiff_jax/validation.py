"""Input checks at the public boundary. The jitted core never validates; everything here runs on host."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Mapping

import jax
import numpy as np


def check_images(images: Any, *, name: str, min_count: int = 1,
                 value_range: tuple[float, float] | None = (-1.0, 1.0)) -> np.ndarray:
  """Returns ``images`` as a float32 NumPy NHWC array, or raises ValueError naming the problem."""
  try:
    arr = np.asarray(images)
  except Exception as e:  # noqa: BLE001 - any conversion failure is bad input.
    raise ValueError(f"{name} could not be converted to an array: {e}") from e
  if arr.ndim != 4:
    raise ValueError(f"{name} must be NHWC with 4 dimensions, got shape {arr.shape}")
  if not (jax.dtypes.issubdtype(arr.dtype, np.floating)  # bfloat16 and float8 included
          or np.issubdtype(arr.dtype, np.integer)):
    raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
  if min(arr.shape[1:]) < 1:
    raise ValueError(f"{name} has an empty image dimension: shape {arr.shape}")
  if arr.shape[0] < min_count:
    raise ValueError(f"{name} needs at least {min_count} images, got {arr.shape[0]}")
  arr = arr.astype(np.float32, copy=False)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains NaN or Inf values")
  if value_range is not None:
    lo, hi = value_range
    if arr.size and (arr.min() < lo - 1e-6 or arr.max() > hi + 1e-6):
      raise ValueError(f"{name} must lie in [{lo}, {hi}] (model space); "
                       f"got range [{arr.min():.4g}, {arr.max():.4g}]")
  return arr


def check_options(options: Mapping[str, Any], valid: Iterable[str], *, what: str) -> None:
  """Raises ValueError for option names outside ``valid``, listing the valid ones."""
  valid = sorted(valid)
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for {what}; valid options: {valid}")


def check_temperature(value: Any, *, name: str = "temperature") -> None:
  """Raises ValueError unless ``value`` is a finite real number > 0."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or not value > 0):
    raise ValueError(f"{name} must be a positive number (finite), got {value!r}")


def check_mask_threshold(value: Any, *, name: str = "mask_threshold") -> None:
  """Raises ValueError unless 0 < ``value`` < 1: the mask keeps the entries with
  |M̃| ≥ θ·max|M̃|, so θ ≤ 0 would keep every entry and θ ≥ 1 only the largest."""
  real = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if not real or not 0.0 < value < 1.0:
    why = ("θ <= 0 would keep every entry" if real and value <= 0 else
           "θ >= 1 would keep only the largest entries" if real and value >= 1 else
           "a fraction of the largest entry")
    raise ValueError(f"{name} must be in (0, 1) ({why}), got {value!r}")


def check_optional_positive_int(value: Any, *, name: str) -> None:
  """Raises ValueError unless ``value`` is None or an int >= 1 (bools are not ints here)."""
  if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                            or value < 1):
    raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def check_choice(value: Any, choices: tuple, *, name: str) -> None:
  """Raises ValueError unless ``value`` is one of ``choices``."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_bool(value: Any, *, name: str) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be a bool, got {value!r}")
