"""The sparsity track (golddiff_jax.sparsity, models/mlp, the reg switch of models/train):
proximal steps and penalties against closed forms, 1-D population minimisers, r = 0 identity,
samplers against float64 NumPy, metrics against naive references, toy data, configs, bad input,
and one smoke run of the whole train + evaluate pipeline."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from golddiff_jax import schedules
from golddiff_jax.models import mlp, train
from golddiff_jax.sparsity import metrics, penalties, samplers, study, toy_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs.sparsity import toy  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import sweep  # noqa: E402  pylint: disable=g-import-not-at-top

RNG = np.random.default_rng


def np_soft(u, tau):
  return np.sign(u) * np.maximum(np.abs(u) - tau, 0.0)


# ---------------------------------------------------------------------------------------------
# Proximal steps
# ---------------------------------------------------------------------------------------------

def test_soft_threshold_and_group_shrink_match_closed_forms():
  rng = RNG(1)
  u, tau = rng.normal(size=(40, 7)), 0.3
  np.testing.assert_allclose(penalties.soft_threshold(jnp.asarray(u), tau), np_soft(u, tau),
                             rtol=1e-6, atol=1e-7)
  w = rng.normal(size=(9, 5)) * rng.uniform(0.05, 2.0, size=(9, 1))
  norms = np.linalg.norm(w, axis=1, keepdims=True)
  want = w * np.maximum(1 - 0.8 / norms, 0)
  got = np.asarray(penalties.group_shrink(jnp.asarray(w, jnp.float32), 0.8))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert (np.all(got[norms[:, 0] <= 0.8] == 0) and np.all(got[norms[:, 0] > 0.8] != 0)
          and (norms <= 0.8).any() and (norms > 0.8).any())
  assert np.all(np.asarray(penalties.group_shrink(jnp.zeros((3, 4)), 0.1)) == 0)


def _mlp_params(d=6, width=8, temb=8):
  """Random parameters with the MLP's names and shapes (biases non-zero, so "untouched" shows)."""
  rng = RNG(3)
  shapes = {"x_in": {"kernel": (d, width), "bias": (width,)}, "time_in": {"kernel": (temb, width)},
            "hidden_0": {"kernel": (width, width), "bias": (width,)},
            "out": {"kernel": (width, d), "bias": (d,)},
            "time_skip": {"kernel": (temb, d), "bias": (d,)}}
  params = jax.tree.map(lambda shape: jnp.asarray(rng.normal(size=shape) * 0.5, jnp.float32),
                        shapes, is_leaf=lambda v: isinstance(v, tuple))
  want = mlp.MLP(width=width, depth=2, temb_dim=temb).init(
      jax.random.key(0), jnp.zeros((1, d, 1, 1)), jnp.zeros((1,), jnp.int32))["params"]
  assert jax.tree.map(jnp.shape, want) == jax.tree.map(jnp.shape, params)
  return params


def test_masked_l1_prox_is_ista_on_kernels_only():
  params = _mlp_params()
  rng = RNG(2)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  lr, r = 0.1, 0.5
  tx = optax.chain(optax.sgd(lr), penalties.weight_prox(penalties.Reg("weights", r),
                                                        optax.constant_schedule(lr)))
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  mask = penalties.kernel_mask(params)
  flat_new = jax.tree_util.tree_leaves_with_path(new)
  for (path, p), g, m, n in zip(jax.tree_util.tree_leaves_with_path(params),
                                jax.tree.leaves(grads), jax.tree.leaves(mask),
                                [v for _, v in flat_new]):
    names = "/".join(str(getattr(k, "key", k)) for k in path)
    step = np.asarray(p, np.float64) - lr * np.asarray(g, np.float64)
    want = np_soft(step, lr * r) if m else step
    np.testing.assert_allclose(np.asarray(n), want, rtol=1e-5, atol=1e-6, err_msg=names)
    assert m == (names.endswith("kernel") and "time" not in names), names
  assert float(penalties.zero_fraction(new)) > 0.05


def test_group_prox_acts_on_first_layer_rows_only():
  params = _mlp_params()
  lr, r = 1.0, 0.9
  reg = penalties.Reg("weights", r, group="first_layer_rows")
  tx = penalties.weight_prox(reg, optax.constant_schedule(lr))
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  w = np.asarray(params["x_in"]["kernel"], np.float64)
  want = w * np.maximum(1 - lr * r / np.linalg.norm(w, axis=1, keepdims=True), 0)
  np.testing.assert_allclose(new["x_in"]["kernel"], want, rtol=1e-5, atol=1e-6)
  for name in ("time_in", "hidden_0", "out"):
    np.testing.assert_array_equal(new[name]["kernel"], params[name]["kernel"])
  np.testing.assert_array_equal(new["x_in"]["bias"], params["x_in"]["bias"])


# ---------------------------------------------------------------------------------------------
# Output penalties: the 1-D population minimisers, and r = 0 bit-identical to DSM
# ---------------------------------------------------------------------------------------------

def _fit_table(target, r, t, v=0.3, points=12, per_point=2000, steps=3000):
  """Fits ε̂(x_t) on a grid of x_t values to DSM + r·P_t, on 1-D Gaussian data x_0 ~ N(0, v) at
  a fixed t, by Adam through the trainer's penalty code. ε is drawn from its exact posterior
  given x_t (standardised, so each grid point's sample mean is E[ε | x_t] exactly); the
  population minimiser is pointwise in x_t, so the fit must equal the closed form."""
  abar = float(schedules.alphas_cumprod()[t])
  sigma = np.sqrt(1 - abar)
  x_grid = np.linspace(-1.5, 1.5, points)
  denom = abar * v + sigma ** 2
  mean_eps = sigma * x_grid / denom
  z = RNG(4).normal(size=(points, per_point))
  z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)
  eps = mean_eps[:, None] + np.sqrt(abar * v / denom) * z
  xj = jnp.asarray(np.repeat(x_grid[:, None], per_point, 1), jnp.float32)
  ej = jnp.asarray(eps, jnp.float32)
  abar32 = jnp.float32(abar)

  def loss(table):
    e_hat = jnp.broadcast_to(table[:, None], ej.shape)
    pen = penalties.output_penalty(target, e_hat, xj, abar32, t_weight="snr")
    return jnp.mean(jnp.square(e_hat - ej)) + r * pen

  opt = optax.adam(optax.cosine_decay_schedule(0.05, steps))

  @jax.jit
  def fit():
    def body(carry, _):
      table, state = carry
      updates, state = opt.update(jax.grad(loss)(table), state)
      return (optax.apply_updates(table, updates), state), None
    table = jnp.zeros(points)
    return jax.lax.scan(body, (table, opt.init(table)), None, length=steps)[0][0]

  return abar, sigma, x_grid, mean_eps, np.asarray(fit(), np.float64)


def test_score_target_minimiser_is_soft_thresholded_posterior_eps():
  r, t = 0.6, 300
  _, sigma, _, mean_eps, fit = _fit_table("score", r, t)
  want = np_soft(mean_eps, r * sigma / 2)
  np.testing.assert_allclose(fit, want, atol=2e-3)
  assert np.sum(want == 0) >= 2 and np.sum(want != 0) >= 2   # both regimes are exercised


def test_x0_target_with_snr_weight_thresholds_x0_at_r_over_2():
  r, t, v = 0.4, 200, 0.3
  abar, sigma, x_grid, mean_eps, fit = _fit_table("x0", r, t, v=v)
  x0_fit = (x_grid - sigma * fit) / np.sqrt(abar)
  x0_post = np.sqrt(abar) * v * x_grid / (abar * v + sigma ** 2)   # E[x_0 | x_t]
  np.testing.assert_allclose((x_grid - sigma * mean_eps) / np.sqrt(abar), x0_post, rtol=1e-9)
  want = np_soft(x0_post, r / 2)
  np.testing.assert_allclose(x0_fit, want, atol=3e-3)
  assert np.sum(want == 0) >= 2 and np.sum(want != 0) >= 2


def test_zero_r_loss_is_bit_identical_to_plain_dsm():
  model = mlp.MLP(width=16, depth=2, temb_dim=8)
  d = 5
  params = model.init(jax.random.key(0), jnp.zeros((1, d, 1, 1)),
                      jnp.zeros((1,), jnp.int32))["params"]
  batch = jnp.asarray(RNG(5).normal(size=(32, d, 1, 1)) * 0.3, jnp.float32)
  tx, sched = optax.sgd(1e-2), optax.constant_schedule(1e-2)
  state = train.TrainState(jnp.zeros((), jnp.int32), params, params, tx.init(params))
  key = jax.random.key(9)
  def run(reg=None):   # compiled without LLVM optimisation (compile time dominates here)
    fn = jax.jit(train.make_train_step(model, tx, sched, 0.9, reg))
    return fn.lower(state, batch, key).compile(
        compiler_options={"xla_backend_optimization_level": 0})(state, batch, key)
  plain = run()
  for target in ("score", "x0", "weights"):
    reg = penalties.Reg(target, 0.0)
    out = run(reg)
    assert np.asarray(out[1]["loss"]).tobytes() == np.asarray(plain[1]["loss"]).tobytes()
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), out[0].params,
                 plain[0].params)
  # r > 0: the loss is DSM + r·P, the DSM part is the plain loss, both are logged.
  reg = penalties.Reg("eps", 0.3)
  out = run(reg)[1]
  assert float(out["dsm"]) == float(plain[1]["loss"])
  np.testing.assert_allclose(float(out["loss"]), float(out["dsm"]) + 0.3 * float(out["penalty"]),
                             rtol=1e-6)


def test_output_penalty_matches_numpy():
  rng = RNG(6)
  e, x = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  abar = rng.uniform(0.01, 0.99, size=(4, 1))
  sig = np.sqrt(1 - abar)
  x0 = (x - sig * e) / np.sqrt(abar)
  want = {"score": np.mean(sig * np.abs(e)), "eps": np.mean(np.abs(e)),
          "x0": np.mean(abar / (1 - abar) * np.abs(x0))}
  for target, value in want.items():
    got = penalties.output_penalty(target, *(jnp.asarray(a, jnp.float32) for a in (e, x, abar)))
    np.testing.assert_allclose(float(got), value, rtol=1e-5)
  got = penalties.output_penalty("x0", *(jnp.asarray(a, jnp.float32) for a in (e, x, abar)),
                                 t_weight="one")
  np.testing.assert_allclose(float(got), np.mean(np.abs(x0)), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 7, 50, 1000])
def test_respaced_schedule(k):
  s = samplers.respaced_schedule(k)
  assert s["t"][0] == 999 and len(s["t"]) == k and np.all(np.diff(s["t"]) < 0)
  assert k == 1 or s["t"][-1] == 0
  assert s["abar_prev"][-1] == 1.0 and np.all((s["beta"] > 0) & (s["beta"] < 1))
  np.testing.assert_allclose(np.cumprod(1 - s["beta"][::-1])[::-1], s["abar"], rtol=1e-9)
  if k == 1000:
    np.testing.assert_allclose(s["beta"][::-1], schedules.betas(), rtol=1e-3)


class _Linear:
  """ε̂ = a(t)·x (hashable)."""

  def __call__(self, params, x, t):
    return x * jnp.cos(t.astype(jnp.float32) / 999.0)[:, None] * params

  def __hash__(self):
    return 0

  def __eq__(self, other):
    return isinstance(other, _Linear)


def _numpy_sampler(x, z, sampler, k, scale):
  s = samplers.respaced_schedule(k)
  x = np.asarray(x, np.float64)
  for j, (t, ab, abp, beta) in enumerate(zip(s["t"], s["abar"], s["abar_prev"], s["beta"])):
    e = x * np.cos(t / 999.0) * scale
    x0 = (x - np.sqrt(1 - ab) * e) / np.sqrt(ab)
    if sampler == "ddim":
      x = np.sqrt(abp) * np.clip(x0, -1, 1) + np.sqrt(1 - abp) * e
    else:
      x0 = np.clip(x0, -1, 1)
      mean = (np.sqrt(abp) * beta / (1 - ab)) * x0 + (np.sqrt(1 - beta) * (1 - abp) / (1 - ab)) * x
      x = mean + np.sqrt(beta * (1 - abp) / (1 - ab)) * z[:, j]
  return x


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_samplers_match_numpy(sampler):
  k, batch, d = 6, 5, 3
  lat = jax.random.normal(jax.random.key(1), (batch, d))
  key = jax.random.key(2)
  got = samplers.sample(_Linear(), jnp.float32(0.9), lat, key, sampler=sampler, num_steps=k)
  sample_keys = [jax.random.fold_in(key, i) for i in range(batch)]
  z = np.stack([[np.asarray(jax.random.normal(jax.random.fold_in(sk, j), (d,)))
                 for j in range(k)] for sk in sample_keys])
  want = _numpy_sampler(np.asarray(lat), z, sampler, k, 0.9)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
  # A sample's randomness depends on its global index only: rows 2.. run alone agree.
  part = samplers.sample(_Linear(), jnp.float32(0.9), lat[2:], key, sampler=sampler,
                         num_steps=k, index_offset=2)
  np.testing.assert_allclose(np.asarray(part), np.asarray(got)[2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1001, 2.5, True])
def test_steps_outside_range_are_rejected(k):
  with pytest.raises(ValueError, match=r"K must be an int in \[1, 1000\]"):
    samplers.respaced_timesteps(k)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def test_sliced_w2_and_mmd_match_naive_references():
  rng = RNG(7)
  x, y = rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) * 1.3 + 0.2
  theta = metrics.directions(3, 16, seed=3)
  per_dir = [np.mean((np.sort(x @ th) - np.sort(y @ th)) ** 2) for th in theta]
  np.testing.assert_allclose(metrics.sliced_w2(x, y, num_directions=16, seed=3),
                             np.sqrt(np.mean(per_dir)), rtol=1e-10)
  np.testing.assert_allclose(np.linalg.norm(theta, axis=1), 1.0, rtol=1e-12)
  h = 0.7
  k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h * h))  # noqa: E731
  n, m = len(x), len(y)
  kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
  np.testing.assert_allclose(metrics.rbf_mmd2(x, y, bandwidth=h), kxx + kyy - 2 * kxy,
                             rtol=1e-8, atol=1e-12)
  assert metrics.sliced_w2(x, x) == 0.0


def test_support_mode_and_variance_metrics():
  rng = RNG(8)
  centers = toy_data.centers()
  pts = np.concatenate([centers[[0, 0, 1, 2, 3, 3, 3]], [[5.0, 5.0]]])
  pts[:7] += rng.normal(size=(7, 2)) * 0.01
  labels = metrics.mode_labels(pts, centers, toy_data.MODE_STD)
  np.testing.assert_array_equal(labels, [0, 0, 1, 2, 3, 3, 3, -1])
  cov = metrics.mode_coverage(labels, 8, min_share=1.0)   # ≥ 1 point in a mode of 8 points
  assert cov["coverage"] == 4 / 8 and cov["off_mode"] == 1 / 8
  np.testing.assert_allclose(cov["mass"], [2 / 8, 1 / 8, 1 / 8, 3 / 8, 0, 0, 0, 0])
  four = np.concatenate([pts[:7], pts[[1, 2, 3, 4, 5, 6, 0]]], axis=1)
  np.testing.assert_array_equal(metrics.mode_labels(four, centers, toy_data.MODE_STD),
                                np.array([0, 0, 1, 2, 3, 3, 3]) * 8 + [0, 1, 2, 3, 3, 3, 0])
  x = rng.normal(size=(50, 4)) * [1, 2, 3, 0.5]
  y = rng.normal(size=(40, 4))
  y[:, 3] = 0
  np.testing.assert_allclose(metrics.off_support_energy(x, [0, 1]),
                             np.mean(np.sum(x[:, 2:] ** 2, axis=1)))
  vr = metrics.variance_ratio(x, y)
  np.testing.assert_allclose(vr[:3], x.var(0)[:3] / y.var(0)[:3])
  assert np.isnan(vr[3])


def test_k_star_is_monotone_on_synthetic_curves():
  ks = [4, 8, 16, 32, 64, 1000]
  rng = RNG(9)
  for _ in range(20):
    curve = np.sort(rng.uniform(0.01, 1.0, len(ks)))[::-1]   # quality improves with K
    taus = np.sort(rng.uniform(0.0, 1.1, 6))
    stars = [metrics.k_star(ks, curve, t) for t in taus]
    values = [np.inf if s is None else s for s in stars]
    assert all(b <= a for a, b in zip(values, values[1:]))   # a looser τ never needs more K
    for t, s in zip(taus, stars):
      want = next((k for k, q in zip(ks, curve) if q <= t), None)
      assert s == want
  with pytest.raises(ValueError, match="increasing"):
    metrics.k_star([8, 4], [1, 2], 1.0)


# ---------------------------------------------------------------------------------------------
# Toy data
# ---------------------------------------------------------------------------------------------

def test_toy_data_kinds():
  sparse = toy_data.ToySpec("sparse", d=10, s=4)
  x, labels = toy_data.sample(sparse, 300, seed=3)
  assert x.shape == (300, 10) and np.all(x[:, 4:] == 0) and np.all(np.abs(x) < 1)
  assert labels.max() < 64 and len(np.unique(labels)) > 40
  np.testing.assert_array_equal(
      metrics.mode_labels(x[:, :4], toy_data.centers(), toy_data.MODE_STD), labels)
  prefix, _ = toy_data.sample(sparse, 100, seed=3)
  np.testing.assert_array_equal(prefix, x[:100])
  assert not np.array_equal(toy_data.sample(sparse, 300, seed=4)[0], x)
  approx, _ = toy_data.sample(toy_data.ToySpec("sparse", d=10, s=2, delta=0.01), 300, seed=0)
  np.testing.assert_allclose(approx[:, 2:].std(), 0.01, rtol=0.1)
  rot = toy_data.ToySpec("rotated", d=10, s=4)
  xr, _ = toy_data.sample(rot, 300, seed=3)
  q = toy_data.rotation(10)
  np.testing.assert_allclose(q @ q.T, np.eye(10), atol=1e-12)
  np.testing.assert_allclose(toy_data.to_basis(xr, rot), x, atol=1e-5)
  assert np.all(np.abs(xr[:, 4:]) > 0).any()
  x3, _ = toy_data.sample(toy_data.ToySpec("toy3d", d=3, s=2, delta=0.02), 300, seed=0)
  assert abs(x3[:, 0].std() - 0.02) < 0.004 and x3[:, 1:].std() > 0.3


@pytest.mark.parametrize("kwargs, match", [
    ({"d": 4, "s": 6}, "exceeds the ambient dimension"),
    ({"s": 3}, "must be even"),
    ({"kind": "moons"}, "data.kind"),
    ({"delta": -1.0}, "delta"),
    ({"kind": "toy3d", "d": 5}, "toy3d"),
])
def test_toy_spec_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    toy_data.ToySpec(**kwargs)


# ---------------------------------------------------------------------------------------------
# Configs, bad input, and the pipeline smoke test
# ---------------------------------------------------------------------------------------------

def _small(arg="", **fields):
  config = toy.get_config(arg)
  config.data.n_train, config.data.n_test = 2000, 300
  config.train.update({"num_steps": 500, "log_every": 250, "checkpoint_every": 250,
                       "batch_size": 128})
  config.model.width = 32
  config.eval.update({"ks": (10, 100), "num_samples": 300, "num_directions": 32,
                      "samplers": ("ddpm", "ddim")})
  for path, value in fields.items():
    section, name = path.split("__")
    config[section][name] = value
  return config


def test_configs_and_sweeps_load():
  config = toy.get_config("target=x0,r=0.01,d=32,s=4,seed=3,kind=rotated,delta=0.01")
  assert (config.reg.target, config.reg.r, config.data.d, config.data.s, config.seed,
          config.data.kind) == ("x0", 0.01, 32, 4, 3, "rotated")
  study.check_config(config)
  with pytest.raises(ValueError, match="unknown config argument"):
    toy.get_config("rr=1")
  for path, args in (("experiments/sweeps/sparsity_screen.py", (None, "quick", "full")),
                     ("experiments/sweeps/sparsity_confirm.py",
                      ("x0=0.1,eps=0.01", "weights=0.1,seeds=2,dims=8-128,s=2,kinds=rotated"))):
    module = sweep.load_module(path, "study_under_test")
    base = sweep.base_config(module.BASE_CONFIG)
    for arg in args:
      runs = module.get_sweep(arg)
      names = [sweep.run_name(r) for r in runs]
      assert len(set(names)) == len(names) and runs
      for overrides in runs:
        study.check_config(sweep.apply_overrides(
            base, {k: v for k, v in overrides.items() if k != "name"}))


@pytest.mark.parametrize("fields, match", [
    ({"reg__target": "l2"}, "reg.target"),
    ({"reg__r": -1e-3}, "reg.r"),
    ({"data__s": 12, "data__d": 8}, "exceeds the ambient dimension"),
    ({"eval__ks": (4, 1001)}, r"\[1, 1000\]"),
    ({"reg__group": "first_layer_rows"}, "needs reg.target='weights'"),
    ({"eval__samplers": ("euler",)}, "eval.samplers"),
])
def test_bad_input_is_rejected_before_writing(tmp_path, fields, match):
  with pytest.raises(ValueError, match=match):
    study.run(_small(**fields), str(tmp_path / "wd"))
  assert not os.path.exists(tmp_path / "wd")


def test_group_penalty_needs_a_first_dense_layer():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs.train import default  # pylint: disable=g-import-not-at-top
  config = default.base_config(ml_collections.ConfigDict())   # the U-Net
  config.reg = toy.get_config("target=weights,r=0.1,group=first_layer_rows").reg
  with pytest.raises(ValueError, match="first layer is dense"):
    train.check_config(config, 1)


@pytest.mark.slow
def test_cli_error_line(tmp_path):
  wd = tmp_path / "wd"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "sparsity_run.py"),
       "--config=" + os.path.join(ROOT, "configs", "sparsity", "toy.py") + ":d=4,s=6",
       f"--workdir={wd}"], capture_output=True, text=True, cwd=ROOT, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: sparsity level s=6 exceeds")
  assert not wd.exists()


def test_smoke_pipeline(tmp_path):
  wd = str(tmp_path / "run")
  config = _small("target=weights,r=0.1,d=16")
  config.eval.samplers = ("ddpm",)   # DDIM is checked against NumPy above
  result = study.run(config, wd)
  assert [(r["sampler"], r["k"]) for r in result["records"]] == [("ddpm", 10), ("ddpm", 100)]
  for rec in result["records"]:
    assert rec["finite"]
    for key in ("sw2", "mmd2", "off_support_energy", "on_support_sw2", "mode_coverage",
                "variance_ratio_active"):
      assert np.isfinite(rec[key]), key
  assert np.isfinite(result["records"][1]["nearest_train"])
  assert result["prox"] == "adam_heuristic" and result["train"]["kernel_zero_fraction"] > 0
  with open(os.path.join(wd, "metrics.json")) as f:
    assert json.load(f)["d"] == 16
  with open(os.path.join(wd, "train_metrics.jsonl")) as f:
    assert len(f.readlines()) == 2
  # A rerun resumes: nothing left to train, same evaluation.
  again = study.run(config, wd)
  assert again["train"]["steps_trained"] == 0
  assert again["records"][0]["sw2"] == result["records"][0]["sw2"]


# ---------------------------------------------------------------------------------------------
# The training-free variant: x̂_0 soft threshold for every analytical method
# ---------------------------------------------------------------------------------------------

def _tiny_stats():
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import procedural_images  # pylint: disable=g-import-not-at-top
  return gd, gd.fit(procedural_images(64, 4, 4, 1, seed=1))


def test_x0_threshold_matches_numpy():
  from golddiff_jax.sparsity import x0_threshold  # pylint: disable=g-import-not-at-top
  _, stats = _tiny_stats()
  x0 = RNG(10).normal(size=(5, 16)) * 0.5
  mu, v = np.asarray(stats.mean, np.float64), np.asarray(stats.eigvecs, np.float64)
  abar = 0.3
  for spec, want in [
      (x0_threshold.Threshold(0.2, "pca"), mu + np_soft((x0 - mu) @ v, 0.1) @ v.T),
      (x0_threshold.Threshold(0.2, "pixel"), np_soft(x0, 0.1)),
      (x0_threshold.Threshold(0.2, "pixel", "one"), np_soft(x0, 0.2 * 0.7 / 0.6)),
      (x0_threshold.Threshold(0.0, "pca"), x0)]:
    got = x0_threshold.apply(stats, jnp.asarray(x0, jnp.float32), abar, spec)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5, err_msg=str(spec))
  traj = RNG(11).normal(size=(2, 5, 4, 4, 1)) * 0.1
  rows = x0_threshold.trace(stats, traj, [900, 0], basis="pixel", delta=0.05, k_t=[7, 3])
  lam = np.asarray(stats.eigvals, np.float64)
  for row, t, x in zip(rows, (900, 0), traj):
    ab = float(schedules.alphas_cumprod()[t])
    assert row["s_t"] == np.mean(np.sum(np.abs(x.reshape(5, -1)) > 0.05, axis=1))
    np.testing.assert_allclose(row["d_eff"], np.sum(ab * lam / (1 - ab + ab * lam)), rtol=1e-9)
  assert [r["k_t"] for r in rows] == [7, 3]
  with pytest.raises(ValueError, match="basis"):
    x0_threshold.Threshold(0.1, "dct")
  with pytest.raises(ValueError, match=">= 0"):
    x0_threshold.Threshold(-0.1)


def test_x0_threshold_applies_to_every_method():
  from golddiff_jax.sparsity import x0_threshold  # pylint: disable=g-import-not-at-top
  gd, stats = _tiny_stats()
  latents = gd.noise(jax.random.key(3), 4, stats.image_shape)
  spec = x0_threshold.Threshold(0.3, "pca")
  abar = schedules.alpha_bar(int(schedules.ddim_timesteps(1)[0]))
  for method in ("optimal", "golddiff"):   # the threshold is applied once, after any method
    plain = gd.sample(stats, latents, method=method, num_steps=1)
    sparse = gd.sample(stats, latents, method=method, num_steps=1, x0_threshold=spec)
    want = x0_threshold.apply(stats, jnp.asarray(plain.images.reshape(4, -1)), abar, spec)
    np.testing.assert_allclose(sparse.images.reshape(4, -1), np.asarray(want), rtol=1e-4,
                               atol=1e-5, err_msg=method)
    assert not np.allclose(sparse.images, plain.images)
  with pytest.raises(ValueError, match="x0_threshold"):
    gd.sample(stats, latents, method="optimal", num_steps=1, x0_threshold=0.3)


# ---------------------------------------------------------------------------------------------
# Study bookkeeping: K* per run, seed statistics, best r, the decision rule
# ---------------------------------------------------------------------------------------------

def _fake_run(target, r, d, seed, curve, floor=0.001, kind="sparse"):
  ks = [4, 16, 64, 1000]
  return {"target": target, "r": r, "d": d, "s": 2, "kind": kind, "seed": seed,
          "floor": {"sw2": floor, "on_support_sw2": floor}, "train": {},
          "records": [{"sampler": "ddpm", "k": k, "finite": True, "sw2": q, "on_support_sw2": q,
                       "mode_coverage": 1.0, "off_support_energy": 0.0, "mmd2": 0.0}
                      for k, q in zip(ks, curve)]}


def test_analysis_k_star_statistics_and_decision():
  from golddiff_jax.sparsity import analysis  # pylint: disable=g-import-not-at-top
  v = RNG(12).normal(size=5)
  mean, ci, n = analysis.mean_ci(list(v) + [float("nan"), None])
  assert n == 5 and mean == pytest.approx(v.mean())
  assert ci == pytest.approx(2.776 * v.std(ddof=1) / np.sqrt(5))
  # Baseline K* grows with d (16 at d=8, 1000 at d=128); x0 is flat (16 at both).
  runs = []
  for seed in (0, 1):
    runs += [_fake_run("none", 0.0, 8, seed, [0.5, 0.1, 0.1, 0.1]),
             _fake_run("none", 0.0, 128, seed, [0.9, 0.5, 0.3, 0.1]),
             _fake_run("x0", 0.1, 8, seed, [0.5, 0.1, 0.1, 0.1]),
             _fake_run("x0", 0.1, 128, seed, [0.5, 0.1, 0.1, 0.1]),
             _fake_run("x0", 0.3, 8, seed, [0.5, 0.5, 0.5, 0.5]),
             _fake_run("x0", 0.3, 128, seed, [0.5, 0.5, 0.5, 0.5])]
  analysis.add_k_star(runs)
  assert [r["k_star_base_sw2"] for r in runs[:6]] == [16, 1000, 16, 16, None, None]
  assert runs[0]["tau_base_sw2"] == pytest.approx(0.11)
  assert runs[0]["k_star_floor_sw2"] is None   # 2 × floor = 0.002 is never reached
  rows = analysis.summarise(runs)
  censored = next(r for r in rows if r["r"] == 0.3 and r["d"] == 8)
  assert censored["k_star_base"] == pytest.approx(2000) and censored["k_star_base_censored"] == 2
  assert analysis.best_r(rows) == {"x0": 0.1}
  dec = analysis.decision(rows, kind="sparse", s=2, target="x0", r=0.1)
  assert dec["base_slope"] == pytest.approx(np.log(1000 / 16) / np.log(16))
  assert dec["reg_slope"] == pytest.approx(0.0, abs=1e-12)
  assert dec["verdict"] == "supported"
  never = analysis.decision(rows, kind="sparse", s=2, target="x0", r=0.3)
  assert never["reg_slope"] == pytest.approx(0.0, abs=1e-12) and not never["a"]
  assert never["verdict"] == "not supported"   # flat only because τ is never reached
  flat = [r for r in runs if not (r["target"] == "none" and r["d"] == 128)]
  flat += [_fake_run("none", 0.0, 128, s, [0.5, 0.1, 0.1, 0.1]) for s in (0, 1)]
  analysis.add_k_star(flat)
  assert analysis.decision(analysis.summarise(flat), kind="sparse", s=2, target="x0",
                           r=0.1)["verdict"] == "null"


def test_report_tables_plots_and_verdict(tmp_path):
  """experiments/sparsity_report.py on a tiny study: a baseline and one penalty at two d."""
  runs = tmp_path / "runs"
  for target, r in (("none", 0.0), ("eps", 0.1)):
    for d in (8, 16):
      config = _small(f"target={target},r={r},d={d},steps=50")
      config.eval.samplers = ("ddpm",)
      study.run(config, str(runs / f"sparse_s2_d{d}_{target}_r{r:g}_seed0"))
  out = tmp_path / "report"
  proc = subprocess.run([sys.executable, "experiments/sparsity_report.py", f"--workdir={runs}",
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ("summary.csv", "summary_sw2.md", "decision_sw2.md", "best_r_sw2.json",
               "quality_vs_k_sw2.png", "kstar_vs_d_sw2.png"):
    assert (out / name).is_file(), name
  with open(out / "best_r_sw2.json") as f:
    assert json.load(f) == {"eps": 0.1}
  assert "| sparse | 2 | eps | 0.1 (best) |" in (out / "decision_sw2.md").read_text()
