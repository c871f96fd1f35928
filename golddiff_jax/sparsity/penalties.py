"""ℓ1-type penalties for sparsity-regularised denoising score matching (arXiv 2502.09151).

The ε-model ε̂_θ(x_t, t) gives the score ŝ = −ε̂/σ_t and x̂_0 = (x_t − σ_t·ε̂)/a_t, with
a_t = √ᾱ_t and σ_t = √(1 − ᾱ_t). ``reg.target`` picks what the ℓ1 acts on:

* ``none``: plain DSM;
* ``score``: P_t = σ_t²·‖ŝ‖₁ = σ_t·‖ε̂‖₁; pointwise minimiser ε̂ = soft(E[ε|x_t], r·σ_t/2);
* ``eps``: P_t = ‖ε̂‖₁; minimiser ε̂ = soft(E[ε|x_t], r/2);
* ``x0``: P_t = w(t)·‖x̂_0‖₁ with w = ᾱ_t/σ_t² (``t_weight="snr"``) or 1 (``"one"``); minimiser
  x̂_0 = soft(E[x_0|x_t], r·w(t)·σ_t²/(2ᾱ_t)), i.e. the constant r/2 with SNR weighting;
* ``weights``: r·Σ|w| over the network's kernels, minimised by a proximal step after each
  optimiser update (`l1_prox`, `group_prox`) restricted to kernels with `optax.masked`. With
  `optax.sgd` that is exact ISTA; after Adam it is a heuristic (not proximal Adam).

The output penalties are per-coordinate means, the same normalisation as the DSM term
mean (ε̂ − ε)², so the minimisers above hold per coordinate. See docs/sparsity.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

TARGETS = ("none", "weights", "score", "eps", "x0")
OUTPUT_TARGETS = ("score", "eps", "x0")
T_WEIGHTS = ("snr", "one")
GROUPS = ("none", "first_layer_rows")
FIRST_LAYER = "x_in"   # name of the first Dense layer that reads the data (models/mlp.py)


@dataclasses.dataclass(frozen=True)
class Reg:
  """The ``reg`` config section as a hashable value (it shapes the compiled training step)."""
  target: str = "none"
  r: float = 0.0
  t_weight: str = "snr"
  group: str = "none"
  exclude: tuple[str, ...] = ("bias", "norm", "time")

  def __post_init__(self):
    if self.target not in TARGETS:
      raise ValueError(f"reg.target must be one of {list(TARGETS)}, got {self.target!r}")
    if isinstance(self.r, bool) or not isinstance(self.r, (int, float)) or not self.r >= 0 \
        or self.r == float("inf"):
      raise ValueError(f"reg.r must be a finite number >= 0, got {self.r!r}")
    if self.t_weight not in T_WEIGHTS:
      raise ValueError(f"reg.t_weight must be one of {list(T_WEIGHTS)}, got {self.t_weight!r}")
    if self.group not in GROUPS:
      raise ValueError(f"reg.group must be one of {list(GROUPS)}, got {self.group!r}")
    if self.group != "none" and self.target != "weights":
      raise ValueError(f"reg.group={self.group!r} needs reg.target='weights', got "
                       f"{self.target!r}")

  @property
  def active(self) -> bool:
    """Whether the penalty changes training at all (r = 0 is plain DSM, bit for bit)."""
    return self.target != "none" and self.r > 0

  @classmethod
  def from_config(cls, reg) -> "Reg":
    """From a ``reg`` ConfigDict (None or missing: no regularisation)."""
    if reg is None:
      return cls()
    get = reg.get if hasattr(reg, "get") else lambda k, d=None: getattr(reg, k, d)
    return cls(target=str(get("target", "none")), r=float(get("r", 0.0)),
               t_weight=str(get("t_weight", "snr")), group=str(get("group", "none")),
               exclude=tuple(str(e) for e in get("exclude", cls.exclude)))


def soft_threshold(u: jax.Array, tau) -> jax.Array:
  """soft(u, τ) = sign(u)·max(|u| − τ, 0), elementwise (τ ≥ 0, broadcastable)."""
  return jnp.sign(u) * jnp.maximum(jnp.abs(u) - tau, 0.0)


def output_penalty(target: str, eps_hat: jax.Array, x_t: jax.Array, abar: jax.Array, *,
                   t_weight: str = "snr") -> jax.Array:
  """The mean over batch and coordinates of the target's P_t (see the module docstring).

  ``abar`` broadcasts against ``eps_hat`` (e.g. [B, 1, 1, 1] for images, [B, 1] for vectors).
  """
  sigma = jnp.sqrt(1.0 - abar)
  if target == "score":
    return jnp.mean(sigma * jnp.abs(eps_hat))
  if target == "eps":
    return jnp.mean(jnp.abs(eps_hat))
  if target == "x0":
    x0_hat = (x_t - sigma * eps_hat) / jnp.sqrt(abar)
    weight = abar / (1.0 - abar) if t_weight == "snr" else 1.0
    return jnp.mean(weight * jnp.abs(x0_hat))
  raise ValueError(f"no output penalty for reg.target={target!r}; valid: {list(OUTPUT_TARGETS)}")


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def kernel_mask(params: Any, exclude: Sequence[str] = Reg.exclude) -> Any:
  """True for every ``kernel`` leaf whose path names none of ``exclude`` (substrings)."""
  def keep(path, _):
    names = _path_names(path)
    joined = "/".join(names).lower()
    return names[-1] == "kernel" and not any(e.lower() in joined for e in exclude)
  return jax.tree_util.tree_map_with_path(keep, params)


def first_layer_mask(params: Any) -> Any:
  """True only for the first data layer's kernel (``x_in/kernel``, [d_in, width])."""
  def keep(path, _):
    names = _path_names(path)
    return names[-2:] == [FIRST_LAYER, "kernel"]
  return jax.tree_util.tree_map_with_path(keep, params)


def has_first_layer(params: Any) -> bool:
  return any(jax.tree.leaves(first_layer_mask(params)))


class ProxState(NamedTuple):
  count: jax.Array   # updates seen (for a scheduled threshold)


def _prox_transform(prox: Callable[[jax.Array, jax.Array], jax.Array],
                    strength: float | optax.Schedule) -> optax.GradientTransformation:
  """``update(u, state, params) = prox(params + u, strength(count)) − params``."""
  def init(params):
    del params
    return ProxState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("a proximal step needs the parameters: pass params to update()")
    level = strength(state.count) if callable(strength) else strength
    new = jax.tree.map(lambda p, u: prox(p + u, level) - p, params, updates)
    return new, ProxState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


def l1_prox(strength: float | optax.Schedule) -> optax.GradientTransformation:
  """The ℓ1 proximal step w ← soft(w, η·r) as an update; ``strength`` = η·r (or a schedule of
  the step count, e.g. ``lambda n: lr(n) * r``). Mask it to kernels with `optax.masked`."""
  return _prox_transform(soft_threshold, strength)


def group_shrink(w: jax.Array, tau) -> jax.Array:
  """Row-wise group soft threshold: row_j·max(1 − τ/‖row_j‖₂, 0) for a kernel [d_in, h]."""
  norms = jnp.sqrt(jnp.sum(w * w, axis=-1, keepdims=True))
  return w * jnp.maximum(1.0 - tau / jnp.maximum(norms, jnp.finfo(w.dtype).tiny), 0.0)


def group_prox(strength: float | optax.Schedule) -> optax.GradientTransformation:
  """The group-lasso proximal step on rows (input features) of a kernel [d_in, h]; mask it to
  the first data layer (`first_layer_mask`): learned input-feature selection."""
  return _prox_transform(group_shrink, strength)


def weight_prox(reg: Reg, schedule: optax.Schedule) -> optax.GradientTransformation | None:
  """The masked proximal step for ``reg`` (None unless ``reg.target == 'weights'``, r > 0)."""
  if reg.target != "weights" or not reg.r > 0:
    return None
  strength = lambda n: schedule(n) * reg.r   # noqa: E731 - η_n·r
  if reg.group == "first_layer_rows":
    return optax.masked(group_prox(strength), first_layer_mask)
  return optax.masked(l1_prox(strength), lambda p: kernel_mask(p, reg.exclude))


def zero_fraction(params: Any, exclude: Sequence[str] = Reg.exclude) -> jax.Array:
  """The fraction of exactly-zero entries over the penalised kernels."""
  mask = kernel_mask(params, exclude)
  leaves = [p for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m]
  if not leaves:
    return jnp.zeros(())
  zeros = sum(jnp.sum(p == 0) for p in leaves)
  return zeros / sum(p.size for p in leaves)
