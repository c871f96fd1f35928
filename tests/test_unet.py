"""The reference U-Net (docs/method.md §8.1): shapes, the interleaved time table, GroupNorm ε,
ResBlock skips, symmetric stride-2 padding, attention and the block layout — against float64 NumPy
references."""

import math

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golddiff_jax.models import unet

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "dropout": 0.1, "num_groups": 4}


def _init(module, *args, **kwargs):
  return module.init({"params": jax.random.key(0)}, *args, **kwargs)


def _run_o0(fn, *args):
  """jit(fn)(*args), compiled without LLVM optimisation: these programs run once, and XLA:CPU
  spends most of their compile time optimising the parameter initialisers' threefry."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def _init_now(module, *args, **kwargs):
  return _run_o0(lambda *a: _init(module, *a, **kwargs), *args)


def _unit_gain(variables):
  """Undo the 1e-5 init gain of the residual branches' last convs, so they change the output."""
  flat = traverse_util.flatten_dict(variables)
  return traverse_util.unflatten_dict({
      k: v * 1e5 if k[-1] == "kernel" and k[-2] in ("conv2", "proj", "tail_conv") else v
      for k, v in flat.items()})


@pytest.mark.parametrize("shape,out_channels", [((2, 28, 28, 1), None), ((3, 32, 32, 3), None),
                                                ((2, 16, 24, 2), 5)])
def test_output_shapes(shape, out_channels):
  model = unet.UNet(**TINY, out_channels=out_channels)
  x = jax.random.normal(jax.random.key(1), shape)
  t = jnp.arange(shape[0], dtype=jnp.int32) * 400

  def run(x, t):
    variables = _unit_gain(_init(model, x, t, train=False))
    eval_a = model.apply(variables, x, t, train=False)
    eval_b = model.apply(variables, x, 999 - t, train=False)
    train_a, train_b = (model.apply(variables, x, t, train=True, rngs={"dropout": k})
                        for k in jax.random.split(jax.random.key(2)))
    return eval_a, eval_b, train_a, train_b

  eps, eps_other_t, train_a, train_b = _run_o0(run, x, t)
  assert eps.shape == (*shape[:3], out_channels or shape[3])
  assert eps.dtype == jnp.float32 and bool(jnp.isfinite(eps).all())
  assert float(jnp.abs(eps - eps_other_t).max()) > 1e-3  # the time embedding is wired in
  # Dropout is active only in training mode and draws from the 'dropout' stream.
  assert not np.allclose(train_a, train_b)
  assert not np.allclose(train_a, eps)


def test_layout_follows_the_published_network():
  model = unet.UNet(ch=8, ch_mult=(1, 2, 2), num_res_blocks=2, num_groups=4)
  x = jnp.zeros((1, 28, 28, 1))
  params = jax.eval_shape(
      lambda: _init(model, x, jnp.zeros((1,), jnp.int32), train=False))["params"]
  names = set(params)
  assert {f"down{i}_block{j}" for i in range(3) for j in range(2)} <= names
  assert {f"up{i}_block{j}" for i in range(3) for j in range(3)} <= names  # 3 per up level
  assert {"down0_downsample", "down1_downsample", "up1_upsample", "up2_upsample"} <= names
  assert "down2_downsample" not in names and "up0_upsample" not in names
  assert "attn" in params["mid_block0"] and "attn" not in params["mid_block1"]
  assert not any("attn" in params[n] for n in names if n.startswith(("down", "up")))
  # Skip concat puts h first: up2_block0 sees 16 (h) + 16 (skip) channels.
  assert params["up2_block0"]["conv1"]["kernel"].shape == (3, 3, 32, 16)
  assert params["up0_block2"]["conv1"]["kernel"].shape == (3, 3, 16, 8)  # 8 + head's 8
  assert params["tail_conv"]["kernel"].shape == (3, 3, 8, 1)
  assert params["time"]["dense0"]["kernel"].shape == (8, 32)  # ch → tdim = 4·ch


def test_timestep_table_matches_float64_formula():
  ch = 64
  table = unet.timestep_table(ch)
  assert table.shape == (1000, ch) and table.dtype == np.float32
  t = np.arange(1000, dtype=np.float64)
  expected = np.zeros((1000, ch))
  for j in range(ch // 2):
    omega = math.exp(-(2 * j / ch) * math.log(10000.0))
    expected[:, 2 * j] = np.sin(t * omega)       # interleaved: sin, cos, sin, cos, …
    expected[:, 2 * j + 1] = np.cos(t * omega)
  np.testing.assert_allclose(table, expected, rtol=0, atol=1e-6)


def test_time_embedding_is_table_dense_swish_dense():
  module = unet.TimeEmbedding(ch=16)
  t = jnp.array([0, 7, 999], jnp.int32)
  params = _init_now(module, t)["params"]
  out = np.asarray(module.apply({"params": params}, t), np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  h = unet.timestep_table(16)[np.asarray(t)].astype(np.float64)
  h = h @ p["dense0"]["kernel"] + p["dense0"]["bias"]
  h = h / (1 + np.exp(-h))
  h = h @ p["dense1"]["kernel"] + p["dense1"]["bias"]
  np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-6)


def _np_group_norm(x, groups, eps):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def test_group_norm_uses_pytorch_epsilon():
  rng = np.random.default_rng(0)
  x = (0.5 + 3e-3 * rng.standard_normal((2, 4, 4, 8))).astype(np.float32)  # var ≈ 1e-5
  module = unet.group_norm(2)
  out = np.asarray(module.apply(_init_now(module, x), x), np.float64)
  x64 = x.astype(np.float64)
  np.testing.assert_allclose(out, _np_group_norm(x64, 2, 1e-5), rtol=2e-4, atol=2e-4)
  assert np.abs(out - _np_group_norm(x64, 2, 1e-6)).max() > 0.05  # Flax's default would differ


@pytest.mark.parametrize("in_ch,out_ch", [(8, 8), (8, 16)])
def test_resblock_skip(in_ch, out_ch):
  block = unet.ResBlock(out_ch, dropout=0.0, num_groups=4)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, in_ch))
  temb = jax.random.normal(jax.random.key(1), (2, 32))
  params = _init_now(block, x, temb, train=False)["params"]
  assert ("skip" in params) == (in_ch != out_ch)
  # Zero the residual branch's last conv: what is left is the skip path alone.
  params = {**params, "conv2": jax.tree.map(jnp.zeros_like, params["conv2"])}
  out = np.asarray(_run_o0(lambda p: block.apply({"params": p}, x, temb, train=False), params),
                   np.float64)
  x64 = np.asarray(x, np.float64)
  if in_ch == out_ch:
    expected = x64
  else:
    k = np.asarray(params["skip"]["kernel"], np.float64)[0, 0]
    expected = x64 @ k + np.asarray(params["skip"]["bias"], np.float64)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def _np_conv(x, k, b, stride):
  """Cross-correlation with zero padding 1 on every side, NHWC × HWIO, float64."""
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  kh, kw = k.shape[:2]
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, k.shape[3]))
  for i in range(ho):
    for j in range(wo):
      patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
      out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, k)
  return out + b


@pytest.mark.parametrize("size", [8, 7])
def test_stride2_conv_pads_symmetrically(size):
  conv = unet.conv(3, stride=2)
  x = np.random.default_rng(1).standard_normal((2, size, size, 2)).astype(np.float32)
  params = _init_now(conv, x)["params"]
  out = np.asarray(conv.apply({"params": params}, x), np.float64)
  assert out.shape == (2, (size + 1) // 2, (size + 1) // 2, 3)
  expected = _np_conv(x.astype(np.float64), np.asarray(params["kernel"], np.float64),
                      np.asarray(params["bias"], np.float64), 2)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_upsample_is_nearest_times_two():
  x = np.arange(2 * 3 * 2 * 1, dtype=np.float32).reshape(2, 3, 2, 1)
  expected = x.repeat(2, axis=1).repeat(2, axis=2)
  np.testing.assert_array_equal(unet.upsample_nearest(jnp.asarray(x)), expected)


def test_attention_block_matches_numpy():
  block = unet.AttnBlock(num_groups=2)
  x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(np.float32)
  params = _init_now(block, x)["params"]
  # The output projection starts near zero (gain 1e-5); use a random one to see the attention.
  params["proj"]["kernel"] = jax.random.normal(jax.random.key(3), params["proj"]["kernel"].shape)
  out = np.asarray(_run_o0(lambda p: block.apply({"params": p}, x), params), np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x64 = x.astype(np.float64)
  hn = _np_group_norm(x64, 2, 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
  proj = lambda h, n: (h @ p[n]["kernel"][0, 0] + p[n]["bias"]).reshape(2, 12, 4)  # noqa: E731
  q, k, v = proj(hn, "q"), proj(hn, "k"), proj(hn, "v")
  logits = np.einsum("bqc,bkc->bqk", q, k) / 2.0
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  attn = np.einsum("bqk,bkc->bqc", w, v).reshape(2, 3, 4, 4)
  expected = x64 + attn @ p["proj"]["kernel"][0, 0] + p["proj"]["bias"]
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,shape,message", [
    ({**TINY, "num_groups": 3}, None, "num_groups=3"),
    ({**TINY, "ch": 7}, None, "even"),
    ({**TINY, "ch_mult": (1, 2, 2)}, (30, 30, 1), "divisible by 2^"),
    ({**TINY, "dropout": 1.0}, None, "dropout"),
])
def test_check_arch_errors(arch, shape, message):
  with pytest.raises(ValueError, match=message.replace("^", r"\^")):
    unet.check_arch(arch, shape)

