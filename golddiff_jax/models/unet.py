"""The reference DDPM U-Net (docs/method.md §8.1) in flax.linen: ε̂ = UNet(x_t, t).

Layout is NHWC. The structure follows the published ``networks/UNet.py`` so that its weights can be
ported: interleaved sin/cos time table → Dense → Swish → Dense; per level ``num_res_blocks``
ResBlocks (each output on the skip stack) and a stride-2 convolution; a middle ResBlock *with*
self-attention (Q-13) and one without; per up level ``num_res_blocks + 1`` ResBlocks on
``concat([h, skip])`` and a nearest ×2 upsample; tail GroupNorm → Swish → Conv3×3.

Porting details that change numbers: GroupNorm ε = 1e-5 (PyTorch's, not Flax's 1e-6), explicit
symmetric padding of 1 for every 3×3 convolution (``"SAME"`` pads a stride-2 convolution
asymmetrically on even sizes), and two-pass GroupNorm variance.

Initialisation follows the published code: Xavier-uniform kernels, zero biases, and a gain of
1e-5 on the last convolution of each residual branch and of the tail, so each block starts
close to the identity.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_TIMESTEPS = 1000
GN_EPSILON = 1e-5
_PAD = ((1, 1), (1, 1))


def check_arch(arch: dict, image_shape=None) -> None:
  """Raises ValueError when ``arch`` (UNet fields) cannot build a network (for ``image_shape``)."""
  ch, ch_mult = int(arch["ch"]), tuple(arch["ch_mult"])
  groups = int(arch.get("num_groups", 32))
  if ch < 2 or ch % 2:
    raise ValueError(f"ch must be an even int >= 2, got {ch}")
  if not ch_mult or any(int(m) < 1 for m in ch_mult):
    raise ValueError(f"ch_mult must be a non-empty tuple of ints >= 1, got {ch_mult}")
  if int(arch.get("num_res_blocks", 2)) < 1:
    raise ValueError(f"num_res_blocks must be >= 1, got {arch.get('num_res_blocks')}")
  if not 0.0 <= float(arch.get("dropout", 0.0)) < 1.0:
    raise ValueError(f"dropout must be in [0, 1), got {arch.get('dropout')}")
  bad = [ch * m for m in ch_mult if groups < 1 or (ch * m) % groups]
  if bad:
    raise ValueError(f"num_groups={groups} must divide every level width; it does not divide "
                     f"{bad} (ch={ch}, ch_mult={ch_mult})")
  if image_shape is not None:
    h, w = int(image_shape[0]), int(image_shape[1])
    factor = 2 ** (len(ch_mult) - 1)
    if h % factor or w % factor:
      raise ValueError(f"image size {h}×{w} must be divisible by 2^(len(ch_mult) − 1) = "
                       f"{factor} for ch_mult={ch_mult}")


def _xavier(gain: float = 1.0):
  return nn.initializers.variance_scaling(gain * gain, "fan_avg", "uniform")


def conv(features: int, kernel: int = 3, stride: int = 1, gain: float = 1.0,
         name: str | None = None) -> nn.Conv:
  """A k×k convolution with symmetric padding (k − 1)/2 on every side."""
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), kernel_init=_xavier(gain),
                 bias_init=nn.initializers.zeros, name=name)


def dense(features: int, gain: float = 1.0, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=_xavier(gain), bias_init=nn.initializers.zeros,
                  name=name)


def group_norm(num_groups: int, name: str | None = None) -> nn.GroupNorm:
  """GroupNorm with PyTorch's ε and a two-pass variance."""
  return nn.GroupNorm(num_groups=num_groups, epsilon=GN_EPSILON, use_fast_variance=False,
                      name=name)


def timestep_table(ch: int, num_timesteps: int = NUM_TIMESTEPS) -> np.ndarray:
  """[T, ch] float32 table; row t = [sin tω_0, cos tω_0, sin tω_1, …], ω_j = 10000^(−2j/ch).

  Computed in float64 and rounded once, so every row is the float32 nearest to the exact value.
  """
  if ch % 2:
    raise ValueError(f"the time embedding needs an even width, got ch={ch}")
  freqs = np.exp(-(np.arange(0, ch, 2, dtype=np.float64) / ch) * math.log(10000.0))
  angles = np.arange(num_timesteps, dtype=np.float64)[:, None] * freqs[None, :]
  return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(
      num_timesteps, ch).astype(np.float32)


class TimeEmbedding(nn.Module):
  """Integer t [B] → [B, 4·ch]: table row, Dense(ch→tdim), Swish, Dense(tdim→tdim)."""
  ch: int

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    table = jnp.asarray(timestep_table(self.ch))
    emb = jnp.take(table, t, axis=0)
    emb = dense(4 * self.ch, name="dense0")(emb)
    return dense(4 * self.ch, name="dense1")(nn.swish(emb))


class AttnBlock(nn.Module):
  """Single-head self-attention over all H·W positions, with a residual add."""
  num_groups: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    hn = group_norm(self.num_groups, name="norm")(x)
    q = conv(c, 1, name="q")(hn).reshape(b, h * w, c)
    k = conv(c, 1, name="k")(hn).reshape(b, h * w, c)
    v = conv(c, 1, name="v")(hn).reshape(b, h * w, c)
    weights = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c), axis=-1)
    out = jnp.einsum("bqk,bkc->bqc", weights, v).reshape(b, h, w, c)
    return x + conv(c, 1, gain=1e-5, name="proj")(out)


class ResBlock(nn.Module):
  """GN→Swish→Conv, + Dense(Swish(temb)), GN→Swish→Dropout→Conv, + skip; optional attention."""
  out_ch: int
  dropout: float
  num_groups: int
  attn: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array, *, train: bool) -> jax.Array:
    h = conv(self.out_ch, name="conv1")(nn.swish(group_norm(self.num_groups, "norm1")(x)))
    h = h + dense(self.out_ch, name="temb")(nn.swish(temb))[:, None, None, :]
    h = nn.swish(group_norm(self.num_groups, "norm2")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv(self.out_ch, gain=1e-5, name="conv2")(h)
    skip = x if x.shape[-1] == self.out_ch else conv(self.out_ch, 1, name="skip")(x)
    h = h + skip
    if self.attn:
      h = AttnBlock(self.num_groups, name="attn")(h)
    return h


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour ×2 on H and W."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(nn.Module):
  """ε-prediction U-Net: ``UNet(...)(x [B,H,W,C], t [B] int, train=...) -> ε̂ [B,H,W,C]``.

  Dropout (``train=True``) draws from the ``'dropout'`` rng collection. H and W must be divisible
  by 2^(len(ch_mult) − 1) so the up path meets the skips at the same sizes.
  """
  ch: int
  ch_mult: tuple[int, ...]
  num_res_blocks: int = 2
  dropout: float = 0.15
  num_groups: int = 32
  out_channels: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 4 or t.shape != x.shape[:1]:
      raise ValueError(f"UNet expects x [B, H, W, C] and t [B]; got {x.shape} and {t.shape}")
    check_arch({"ch": self.ch, "ch_mult": self.ch_mult, "num_res_blocks": self.num_res_blocks,
                "dropout": self.dropout, "num_groups": self.num_groups}, x.shape[1:])
    temb = TimeEmbedding(self.ch, name="time")(t)
    block = lambda out, name, attn=False: ResBlock(  # noqa: E731
        out, self.dropout, self.num_groups, attn, name=name)

    h = conv(self.ch, name="head")(x)
    skips = [h]
    for i, mult in enumerate(self.ch_mult):
      for j in range(self.num_res_blocks):
        h = block(self.ch * mult, f"down{i}_block{j}")(h, temb, train=train)
        skips.append(h)
      if i != len(self.ch_mult) - 1:
        h = conv(h.shape[-1], stride=2, name=f"down{i}_downsample")(h)
        skips.append(h)

    h = block(h.shape[-1], "mid_block0", attn=True)(h, temb, train=train)
    h = block(h.shape[-1], "mid_block1")(h, temb, train=train)

    for i in reversed(range(len(self.ch_mult))):
      for j in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.ch * self.ch_mult[i], f"up{i}_block{j}")(h, temb, train=train)
      if i != 0:
        h = conv(h.shape[-1], name=f"up{i}_upsample")(upsample_nearest(h))
    assert not skips

    h = nn.swish(group_norm(self.num_groups, "tail_norm")(h))
    return conv(self.out_channels or x.shape[-1], gain=1e-5, name="tail_conv")(h)
