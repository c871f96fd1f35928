"""An MLP ε-model for vector data: ε̂ = MLP(x_t, t) (the sparsity track's toy experiments).

Input x_t [B, ...] is flattened to [B, d]; t [B] int DDPM timesteps. The first hidden layer reads
[x, e(t)] with e(t) the 128-dim sinusoidal table of `golddiff_jax.models.unet.timestep_table`;
it is written as two Dense layers, ``x_in`` (the data rows, [d, width], the layer the group
penalty acts on) and ``time_in`` (no bias), summed — the same map as one Dense on the
concatenation. Then ``depth − 1`` more SiLU hidden layers of ``width`` and a linear ``out``
layer back to d, reshaped to the input's shape. ``train`` is accepted for the trainer's call
signature (no dropout).

``skip=True`` adds a per-coordinate, time-gated linear skip: ε̂ += g(t) ⊙ x_t with
g(t) = ``time_skip``(e(t)) (a Dense to d, starting at g ≡ 1). On a coordinate where the data are
constant the exact ε-prediction is x_t/σ_t, a diagonal gain that a plain MLP of width ≤ d
learns only slowly (measured: a 128-wide MLP after 3000 steps on d = 128 leaves an inactive-
coordinate sample std of 0.6 instead of 0); the skip makes that gain one small layer. It lives
under a ``time`` name, so the default ``reg.exclude`` keeps it out of the weight penalties.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from golddiff_jax.models.unet import timestep_table

KIND = "mlp"


def check_arch(arch: dict) -> None:
  """Raises ValueError when ``arch`` (MLP fields) cannot build a network."""
  for name in ("width", "depth", "temb_dim"):
    value = arch.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"model.{name} must be an int >= 1, got {value!r}")
  if arch["temb_dim"] % 2:
    raise ValueError(f"model.temb_dim must be even, got {arch['temb_dim']}")


def normalize_arch(arch: dict) -> dict:
  return {"kind": KIND, "width": int(arch["width"]), "depth": int(arch["depth"]),
          "temb_dim": int(arch["temb_dim"]), "skip": bool(arch.get("skip", True))}


class MLP(nn.Module):
  width: int = 256
  depth: int = 3
  temb_dim: int = 128
  skip: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    shape = x.shape
    h = x.reshape(shape[0], -1)
    emb = jnp.asarray(timestep_table(self.temb_dim))[t]
    h = nn.Dense(self.width, name="x_in")(h) + nn.Dense(self.width, use_bias=False,
                                                        name="time_in")(emb)
    h = nn.silu(h)
    for i in range(self.depth - 1):
      h = nn.silu(nn.Dense(self.width, name=f"hidden_{i}")(h))
    d = math.prod(shape[1:])
    out = nn.Dense(d, name="out")(h)
    if self.skip:
      gain = nn.Dense(d, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.ones,
                      name="time_skip")(emb)
      out = out + gain * x.reshape(shape[0], -1)
    return out.reshape(shape)
