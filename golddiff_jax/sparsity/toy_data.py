"""Offline, seeded toy data of low intrinsic dimension s in ambient dimension d.

* ``sparse``: coordinate-sparse. The first s coordinates are active: s/2 independent copies of
  a mixture of 8 Gaussians on a circle (radius ``RADIUS``, per-mode std ``MODE_STD``), so 8^(s/2)
  joint modes (8 for s = 2, 64 for s = 4). The other d − s coordinates are exactly 0, or
  N(0, δ²) for δ = ``delta`` > 0 ("approximately sparse").
* ``rotated``: the same points times a fixed random orthogonal Q (x ← Q·x; Q depends on d
  only, see `rotation`): same intrinsic dimension, nothing coordinate-sparse.
* ``toy3d``: d = 3, the 8-mode circle on the Y–Z plane, X ~ N(0, δ²) (δ defaults to 0.02).

Every point lies well inside [−1, 1] per coordinate (‖x‖ ≤ ~0.9), the model space of the rest of
the project. A draw is a function of (kind, n, d, s, delta, seed) only: row i comes from
``fold_in(key(seed), i)``, so the first n rows of a larger draw equal a smaller draw.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("sparse", "rotated", "toy3d")
NUM_MODES = 8          # per circle
RADIUS = 0.5
MODE_STD = 0.05
ROTATION_SEED = 20250213   # fixed: Q depends on d only


@dataclasses.dataclass(frozen=True)
class ToySpec:
  kind: str = "sparse"
  d: int = 8
  s: int = 2
  delta: float = 0.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"data.kind must be one of {list(KINDS)}, got {self.kind!r}")
    for name in ("d", "s"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"data.{name} must be an int >= 1, got {v!r}")
    if self.kind == "toy3d" and (self.d != 3 or self.s != 2):
      raise ValueError(f"data.kind='toy3d' has d = 3 and s = 2, got d={self.d}, s={self.s}")
    if self.s > self.d:
      raise ValueError(f"sparsity level s={self.s} exceeds the ambient dimension d={self.d}")
    if self.s % 2:
      raise ValueError(f"s must be even (pairs of circle coordinates), got {self.s}")
    if not (isinstance(self.delta, (int, float)) and np.isfinite(self.delta)
            and self.delta >= 0):
      raise ValueError(f"data.delta must be a finite number >= 0, got {self.delta!r}")

  @property
  def num_modes(self) -> int:
    return NUM_MODES ** (self.s // 2)

  def active(self) -> np.ndarray:
    """Indices of the active coordinates (before any rotation)."""
    return np.arange(1, 3) if self.kind == "toy3d" else np.arange(self.s)


def centers() -> np.ndarray:
  """[8, 2] the circle's mode centres (angle 2πm/8)."""
  angle = 2 * np.pi * np.arange(NUM_MODES) / NUM_MODES
  return RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def rotation(d: int) -> np.ndarray:
  """A fixed random orthogonal [d, d] matrix (QR of a Gaussian with sign-fixed diagonal)."""
  g = np.asarray(jax.random.normal(jax.random.key(ROTATION_SEED), (d, d), jnp.float32),
                 np.float64)
  q, r = np.linalg.qr(g)
  return q * np.sign(np.diag(r))[None, :]


def _row(key: jax.Array, spec: ToySpec) -> jax.Array:
  k_mode, k_noise, k_rest = jax.random.split(key, 3)
  pairs = spec.s // 2
  modes = jax.random.randint(k_mode, (pairs,), 0, NUM_MODES)
  active = (jnp.asarray(centers(), jnp.float32)[modes]
            + MODE_STD * jax.random.normal(k_noise, (pairs, 2))).reshape(-1)
  rest = spec.delta * jax.random.normal(k_rest, (spec.d - spec.s,))
  if spec.kind == "toy3d":
    return jnp.concatenate([rest, active]), modes
  return jnp.concatenate([active, rest]), modes


@functools.lru_cache(maxsize=8)
def _draw(spec: ToySpec, n: int):
  """The compiled ``seed -> (x, modes)`` for one (spec, n). Compiled without LLVM optimisation:
  it runs once per dataset, and XLA:CPU spends seconds optimising the unrolled threefry."""
  def draw(seed):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    return jax.vmap(lambda k: _row(k, spec))(keys)
  return jax.jit(draw).lower(jax.ShapeDtypeStruct((), jnp.uint32)).compile(
      compiler_options={"xla_backend_optimization_level": 0})


def sample(spec: ToySpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``n`` points [n, d] float32 and their joint mode labels [n] (in [0, 8^(s/2)))."""
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be a positive int, got {n!r}")
  x, modes = jax.device_get(_draw(spec, int(n))(jnp.asarray(int(seed), jnp.uint32)))
  x = np.asarray(x, np.float64)
  if spec.kind == "rotated":
    x = x @ rotation(spec.d).T
  labels = np.zeros(n, np.int64)
  for p in range(spec.s // 2):
    labels = labels * NUM_MODES + np.asarray(modes)[:, p]
  return x.astype(np.float32), labels


def splits(spec: ToySpec, n_train: int, n_test: int, seed: int):
  """(train [n_train, d], test [n_test, d], test labels): one draw of n_train + n_test rows."""
  x, labels = sample(spec, n_train + n_test, seed)
  return x[:n_train], x[n_train:], labels[n_train:]


def to_basis(x: np.ndarray, spec: ToySpec) -> np.ndarray:
  """Points in the coordinates where the data are sparse (undoes the rotation)."""
  return x @ rotation(spec.d) if spec.kind == "rotated" else x
