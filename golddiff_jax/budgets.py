"""GoldDiff's per-step budgets and proxy resolution (docs/method.md §6.1–6.3), computed on the host.

Everything here is plain Python on static values: the budgets become static shapes of the
per-step compiled function, so each distinct (m_t, k_t) compiles once.

Budgets (docs/method.md §6.2, quirk Q-5): with ν_t = clip(√max(1 − ᾱ_t, 0), 0, 1) computed in
float64 from the float32 ᾱ_t and φ_t = 1 − ν_t,

    m_t = clip(R(k_max + (N − k_max)·φ_t), k_max, N)     # random-pool size
    k_t = max(k_min, R(k_max − (k_max − k_min)·φ_t))    # golden-subset size

with R = Python ``round`` (half to even). The number of proxy survivors is always k_max (Q-4).

Input rules (a deliberate tightening of the published clamps, which silently fix bad configs):

* ``k_min``/``k_max`` default to round(N/20) and round(N/10) (at least 1) when not given;
* an explicit k_min or k_max below 1 or above N, or k_min > k_max, raises ValueError (the
  published code clamps k ← min(k, N) and k_max ← max(k_max, k_min) instead);
* ``static_m`` < k_max raises ValueError (Q-7: the published code pads with duplicates);
* ``low_res_dim`` < 0 raises ValueError; 0 means "auto"
  (the published ≤ 0 rule of docs/method.md §6.1 step 4).
"""

from __future__ import annotations

import dataclasses
import math
import numbers


@dataclasses.dataclass(frozen=True)
class Budgets:
  """Resolved budget bounds for a database of N images."""
  num_images: int
  k_min: int
  k_max: int


def _check_int(name: str, value, *, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an int, got {value!r}")
  value = int(value)
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return value


def resolve_budgets(num_images: int, k_min=None, k_max=None) -> Budgets:
  """Checks k_min/k_max against N, fills in the N/20 and N/10 defaults; returns `Budgets`."""
  n = _check_int("number of database images", num_images)
  k_min = max(1, round(n / 20)) if k_min is None else _check_int("k_min", k_min)
  k_max = max(1, round(n / 10)) if k_max is None else _check_int("k_max", k_max)
  for name, value in (("k_min", k_min), ("k_max", k_max)):
    if value > n:
      raise ValueError(f"{name}={value} exceeds the number of database images N={n}")
  if k_min > k_max:
    raise ValueError(f"k_min={k_min} must be <= k_max={k_max}")
  return Budgets(num_images=n, k_min=k_min, k_max=k_max)


def locality_factor(abar: float) -> float:
  """φ_t = 1 − clip(√max(1 − ᾱ_t, 0), 0, 1), in float64 from the float32 ᾱ_t."""
  nu = min(max(math.sqrt(max(1.0 - float(abar), 0.0)), 0.0), 1.0)
  return 1.0 - nu


def step_budget(budgets: Budgets, abar: float, *, dynamic_m: bool = True,
                dynamic_k: bool = True, static_m=None, static_k=None) -> tuple[int, int]:
  """(m_t, k_t) for one step: the random-pool size and the golden-subset size.

  With ``dynamic_m=False``: m_t = min(N, static_m), or ⌊(k_max + N)/2⌋ when static_m is None.
  With ``dynamic_k=False``: k_t = min(k_max, static_k), or ⌊(k_min + k_max)/2⌋ when None.
  """
  n, k_min, k_max = budgets.num_images, budgets.k_min, budgets.k_max
  phi = locality_factor(abar)
  if dynamic_m:
    m = min(max(round(k_max + (n - k_max) * phi), k_max), n)
  elif static_m is None:
    m = (k_max + n) // 2
  else:
    m = min(n, int(static_m))
  if dynamic_k:
    k = max(k_min, round(k_max - (k_max - k_min) * phi))
  elif static_k is None:
    k = (k_min + k_max) // 2
  else:
    k = min(k_max, int(static_k))
  return int(m), int(k)


def check_ablation_options(budgets: Budgets, *, dynamic_m: bool, dynamic_k: bool,
                           static_m=None, static_k=None) -> None:
  """Raises ValueError for inconsistent dynamic/static budget options (host-side)."""
  if static_m is not None:
    if dynamic_m:
      raise ValueError("static_m is only used with dynamic_m=False; set dynamic_m=False or "
                       "drop static_m")
    static_m = _check_int("static_m", static_m)
    if static_m < budgets.k_max:
      raise ValueError(f"static_m={static_m} is below k_max={budgets.k_max}: the pool must hold "
                       f"at least the k_max proxy survivors (the published code would repeat "
                       f"indices, quirk Q-7)")
  if static_k is not None:
    if dynamic_k:
      raise ValueError("static_k is only used with dynamic_k=False; set dynamic_k=False or "
                       "drop static_k")
    _check_int("static_k", static_k)


def schedule(budgets: Budgets, abars, **ablation) -> list[tuple[int, int]]:
  """[(m_t, k_t)] for every ᾱ_t of a run (after `check_ablation_options`)."""
  check_ablation_options(budgets, **{"dynamic_m": True, "dynamic_k": True, **ablation})
  return [step_budget(budgets, abar, **ablation) for abar in abars]


def _proxy_side(res: int, low_res_dim: int) -> int:
  """The proxy side length r_p for an image side ``res`` (docs/method.md §6.1 step 4)."""
  if low_res_dim <= 0:
    upper = res // 2
    divisors = [d for d in range(4, upper + 1) if res % d == 0]
    if divisors:
      return max(divisors)
    divisors = [d for d in range(1, upper + 1) if res % d == 0]
    return max(divisors) if divisors else res
  if res % low_res_dim == 0:
    return low_res_dim
  return max(d for d in range(1, min(low_res_dim, res) + 1) if res % d == 0)


def proxy_grid(image_shape, low_res_dim: int) -> tuple[int, int]:
  """Proxy (height, width) for ``image_shape`` (H, W, C); each side follows
  docs/method.md §6.1 step 4.

  Examples: 32 → 16 (f = 2), 64 → 16 (f = 4), 28 → 14 (f = 2).
  """
  low_res_dim = _check_int("low_res_dim (0 = automatic)", low_res_dim, minimum=0)
  h, w, _ = image_shape
  return _proxy_side(int(h), low_res_dim), _proxy_side(int(w), low_res_dim)
