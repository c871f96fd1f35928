"""Reference-network training, checkpoints and use (golddiff_jax.models): the loss goes down, 1
and 8 devices agree, a resumed run equals an uninterrupted one, load_reference checks its input,
and predict_x0 / sample match float64 NumPy references of docs/method.md §8.1 and §2.4."""

import functools
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from golddiff_jax.data import procedural_images
from golddiff_jax.models import checkpoint as ckpt, reference, train
from golddiff_jax.models.unet import UNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs.train import default  # noqa: E402  pylint: disable=g-import-not-at-top

IMAGES = procedural_images(24, 8, 8, 1, seed=0)   # 3 batches of 8 per epoch
# One level, no dropout: XLA:CPU compile time dominates these tests (test_unet covers the rest).
ARCH = {"ch": 8, "ch_mult": (1,), "num_res_blocks": 1, "dropout": 0.0, "num_groups": 4}


def tiny_config(**train_fields):
  config = default.get_config()
  config.model.update(ARCH)
  config.train.update({"batch_size": 8, "num_steps": 6, "learning_rate": 3e-3,
                       "warmup_steps": 2, "ema_decay": 0.9, "log_every": 1,
                       "checkpoint_every": 2, "keep_checkpoints": 5, **train_fields})
  return config


def _read_metrics(workdir):
  with open(os.path.join(workdir, train.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def _checkpoint_arrays(workdir, step):
  manager = ckpt.open_manager(os.path.join(workdir, "checkpoints"), read_only=True)
  like = train.abstract_state(UNet(**ARCH), train.hyperparameters(tiny_config().train),
                              (8, 8, 1), train.make_mesh(-1))
  arrays = ckpt.restore(manager, step, {n: getattr(like, n) for n in ("params", "ema_params")})
  manager.close()
  return arrays


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("reference") / "wd")
  return workdir, train.train(tiny_config(), workdir, images=IMAGES)


def test_workdir_outputs(trained):
  workdir, summary = trained
  assert summary["step"] == 6 and summary["steps_trained"] == 6 and summary["resumed_from"] == 0
  lines = _read_metrics(workdir)
  assert [m["step"] for m in lines] == [1, 2, 3, 4, 5, 6]
  assert set(lines[0]) == {"step", "loss", "steps_per_sec", "lr", "grad_norm"}
  assert lines[0]["lr"] == 0.0 and lines[2]["lr"] == pytest.approx(3e-3)  # linear warm-up
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["ch"] == 8
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [2, 4, 6]
  for item in ("params", "ema_params", "opt_state", "meta"):
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "6", item))


def test_resume_after_interruption_equals_uninterrupted(trained, tmp_path):
  workdir = str(tmp_path / "wd")
  train.train(tiny_config(num_steps=3), workdir, images=IMAGES)
  # A crash after step 3 was logged but before its checkpoint: only step 2 survives.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
  summary = train.train(tiny_config(), workdir, images=IMAGES)
  assert summary["resumed_from"] == 2 and summary["steps_trained"] == 4
  resumed, full = _read_metrics(workdir), _read_metrics(trained[0])
  assert [m["step"] for m in resumed] == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([m["loss"] for m in resumed], [m["loss"] for m in full], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               _checkpoint_arrays(workdir, 6), _checkpoint_arrays(trained[0], 6))
  # Nothing left to do: a rerun returns at once.
  assert train.train(tiny_config(), workdir, images=IMAGES)["steps_trained"] == 0


def test_config_errors(trained, tmp_path):
  with pytest.raises(ValueError, match="divisible by the number of devices"):
    train.train(tiny_config(batch_size=6), str(tmp_path), images=IMAGES)
  with pytest.raises(ValueError, match="num_groups=3"):
    config = tiny_config()
    config.model.num_groups = 3
    train.train(config, str(tmp_path), images=IMAGES)
  config = tiny_config()
  config.model.ch = 16
  with pytest.raises(ValueError, match="Use another workdir"):
    train.train(config, trained[0], images=IMAGES)


def test_batch_order_is_a_function_of_the_step():
  epoch0 = np.concatenate([train.batch_indices(20, 8, s, seed=3) for s in (0, 1)])
  epoch1 = np.concatenate([train.batch_indices(20, 8, s, seed=3) for s in (2, 3)])
  assert len(set(epoch0)) == 16 and len(set(epoch1)) == 16   # no repeats within an epoch
  assert not np.array_equal(epoch0, epoch1)                  # a new permutation per epoch
  np.testing.assert_array_equal(train.batch_indices(20, 8, 3, seed=3), epoch1[8:])
  assert not np.array_equal(train.batch_indices(20, 8, 0, seed=4), epoch0[:8])


def _step_setup(num_devices):
  """The train step and initial state as train() builds them (and caches them: no recompiles).

  The initial state comes from the 8-device init (compiled once), copied onto the mesh.
  """
  model, hyper = UNet(**ARCH), train.hyperparameters(tiny_config().train)
  full = train.make_mesh(-1)
  state = train.compiled_init(model, hyper, (8, 8, 1), full)(
      jax.device_put(jax.random.key(0), NamedSharding(full, P())))
  mesh = train.make_mesh(num_devices)
  replicated = NamedSharding(mesh, P())
  state = jax.device_put(jax.device_get(state), replicated)
  batch = train.device_batch(IMAGES, np.arange(8), NamedSharding(mesh, P("data")))
  key = jax.device_put(jax.random.key(1), replicated)
  if mesh == full:
    step = train.compiled_step(model, hyper, (8, 8, 1), 8, mesh)  # cached by the fixture
  else:  # the same step on another mesh, compiled without LLVM optimisation (faster here)
    tx, schedule = train.make_optimizer(tiny_config().train)
    step = train.jit_train_step(train.make_train_step(model, tx, schedule, 0.9), mesh).lower(
        state, batch, key).compile(compiler_options={"xla_backend_optimization_level": 0})
  return model, state, step, batch, key


def test_one_and_eight_devices_agree():
  results = []
  for n in (8, 1):
    _, state, step, batch, key = _step_setup(n)
    losses = []
    for _ in range(2):
      state, metrics = step(state, batch, key)
      losses.append(float(metrics["loss"]))
    results.append((losses, jax.device_get(state.params)))
  assert results[0][1]["head"]["kernel"].shape == (3, 3, 1, 8)
  np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               results[0][1], results[1][1])


def test_training_lowers_the_loss_on_a_fixed_batch():
  model, state, step, batch, key = _step_setup(8)
  t = jnp.array([50, 200, 400, 600, 800, 950, 100, 300], jnp.int32)
  eps = jax.random.normal(jax.random.key(5), batch.shape)
  abar = jnp.asarray(train.schedules.alphas_cumprod())[t][:, None, None, None]
  x_t = jnp.sqrt(abar) * batch + jnp.sqrt(1 - abar) * eps

  def fixed_loss(params):
    return float(jnp.mean(jnp.square(_apply(model, params, x_t, t) - eps)))

  before = fixed_loss(state.params)
  for _ in range(15):
    state, _ = step(state, batch, key)
  after = fixed_loss(state.params)
  assert after < 0.8 * before, (before, after)


def test_checkpoint_round_trip(tmp_path):
  manager = ckpt.open_manager(str(tmp_path / "checkpoints"), keep=2)
  arrays = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "ema_params": {"w": jnp.ones((2, 3))},
            "opt_state": (jnp.int32(4), {"mu": jnp.zeros(3)})}
  meta = ckpt.make_meta({**ARCH, "ch_mult": list(ARCH["ch_mult"])}, (8, 8, 1), 4)
  ckpt.save(manager, 4, arrays, meta)
  manager.close()
  manager, step, read = ckpt.latest(str(tmp_path))   # the parent (workdir) is accepted
  assert step == 4 and read["arch"] == {**ARCH} and read["image_shape"] == (8, 8, 1)
  sharding = NamedSharding(train.make_mesh(-1), P())
  restored = ckpt.restore(manager, 4, {k: ckpt.abstract(v, sharding) for k, v in arrays.items()})
  jax.tree.map(np.testing.assert_array_equal, restored, arrays)


def test_load_reference(trained, tmp_path):
  workdir = trained[0]
  model = reference.load_reference(workdir, image_shape=(8, 8, 1))
  again = reference.load_reference(os.path.join(workdir, "checkpoints"))
  assert model.step == 6 and model.image_shape == (8, 8, 1) and model.arch == ARCH
  jax.tree.map(np.testing.assert_array_equal, model.params, again.params)
  jax.tree.map(np.testing.assert_array_equal, model.params,
               _checkpoint_arrays(workdir, 6)["ema_params"])
  with pytest.raises(ValueError, match=r"8×8×1.*16×16×1"):
    reference.load_reference(workdir, image_shape=(16, 16, 1))
  with pytest.raises(ValueError, match=r"8×8×1.*8×8×3.*channels"):
    reference.load_reference(workdir, image_shape=(8, 8, 3))
  with pytest.raises(ValueError, match="does not exist"):
    reference.load_reference(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="no checkpoint"):
    reference.load_reference(str(tmp_path))
  broken = tmp_path / "broken" / "checkpoints"
  shutil.copytree(os.path.join(workdir, "checkpoints", "6"), broken / "6")
  shutil.rmtree(broken / "6" / "ema_params")
  with pytest.raises(ValueError, match="unreadable"):
    reference.load_reference(str(broken.parent))


@pytest.fixture(scope="module")
def model(trained):
  return reference.load_reference(trained[0])


def _eps64(model, x, t):
  eps = _apply(model.module, model.params, jnp.asarray(x, jnp.float32),
               jnp.full((len(x),), t, jnp.int32))
  return np.asarray(eps, np.float64)


@functools.partial(jax.jit, static_argnums=0)
def _apply(module, params, x, t):
  return module.apply({"params": params}, x, t, train=False)


def _abars64():
  betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float32)
  return np.cumprod(np.float32(1) - betas, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("t", [0, 500, 999])
def test_predict_x0_matches_formula(model, t):
  x_t = np.random.default_rng(t).standard_normal((3, 8, 8, 1)).astype(np.float32)
  x0 = np.asarray(reference.predict_x0(model, x_t, t), np.float64)
  abar = _abars64()[t]
  eps = _eps64(model, x_t, t)
  assert np.abs(eps).mean() > 0.05  # a non-trivial ε̂
  expected = (x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
  np.testing.assert_allclose(x0, expected, rtol=1e-5, atol=2e-6 / np.sqrt(abar))


def test_sample_reproduces_hand_rolled_ddim(model):
  latents = np.random.default_rng(7).standard_normal((8, 8, 8, 1)).astype(np.float32)
  steps = 4
  out = reference.sample(model, latents[:3], num_steps=steps)
  abars, ratio = _abars64(), 1000 // steps
  x, expected = latents[:3].astype(np.float64), []
  for t in [(steps - 1 - j) * ratio for j in range(steps)]:
    a, a_prev = abars[t], (abars[t - ratio] if t >= ratio else 1.0)
    eps = _eps64(model, x, t)
    x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
    eps_hat = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
    x = np.sqrt(a_prev) * np.clip(x0, -1, 1) + np.sqrt(1 - a_prev) * eps_hat
    expected.append(x0)
  np.testing.assert_array_equal(out.timesteps, [750, 500, 250, 0])
  np.testing.assert_allclose(out.x0_trajectory, np.stack(expected), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(out.images, out.x0_trajectory[-1])
  assert out.compile_seconds[0] > 0 and not out.compile_seconds[1:].any()
  assert out.step_seconds.shape == (steps,) and (out.step_seconds > 0).all()
  assert out.step_bytes.shape == (steps,)
  # The compiled step is cached: a second batch of the same shape does not compile again.
  again = reference.sample(model, latents[:3], num_steps=steps)
  assert again.compile_seconds[0] < 0.1 * out.compile_seconds[0]
  np.testing.assert_array_equal(again.x0_trajectory, out.x0_trajectory)
  # A batch that divides by the 8 devices is sharded; same numbers per sample.
  sharded = reference.sample(model, latents, num_steps=steps)
  np.testing.assert_allclose(sharded.x0_trajectory[:, :3], out.x0_trajectory, rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match="latents must have shape"):
    reference.sample(model, latents[:, :4], num_steps=steps)


@pytest.mark.parametrize("name", ["default", "mnist", "fashion_mnist", "cifar10", "celebahq",
                                  "afhq"])
def test_train_configs(name):
  import importlib  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import get_spec, resolution_of  # pylint: disable=g-import-not-at-top
  from golddiff_jax.models.unet import check_arch  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.train.{name}").get_config()
  dataset = importlib.import_module(f"configs.{name}").get_config()
  assert config.data.to_dict() == dataset.data.to_dict()  # the analytical runs' images
  res = resolution_of(config.data)
  check_arch(config.model.to_dict(), (res, res, get_spec(config.data.dataset).shape[2]))
  if name != "default":  # docs/method.md §8.1 sizes
    assert (config.model.ch, tuple(config.model.ch_mult)) == (
        (64, (1, 2, 2)) if res == 28 else (128, (1, 2, 3, 4)))
    assert config.model.dropout == 0.15 and config.model.num_groups == 32


def _cli(*args):
  import subprocess  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train_reference.py"),
                         *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("args,message", [
    (["--config.train.bogus=1"], "unknown config field"),
    (["--config.train.batch_size=6"], "divisible by the number of devices"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
  result = _cli("--config=configs/train/default.py", f"--workdir={tmp_path / 'wd'}", *args)
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_trains_and_resumes_the_default_config(tmp_path):
  """End to end through TFDS: the default config (real data path) for 2 steps, then 1 more."""
  workdir, data_dir = tmp_path / "wd", tmp_path / "tfds"
  common = ["--config=configs/train/default.py", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.data.subset_size=64",
            "--config.train.log_every=1", "--config.train.checkpoint_every=2"]
  first = _cli(*common, "--config.train.num_steps=2")
  assert first.returncode == 0, first.stderr
  second = _cli(*common, "--config.train.num_steps=3")
  assert second.returncode == 0, second.stderr
  assert [m["step"] for m in _read_metrics(workdir)] == [1, 2, 3]
  model = reference.load_reference(str(workdir), image_shape=(28, 28, 1))
  assert model.step == 3 and model.arch["ch"] == 16


def test_checkpoint_past_num_steps_is_refused(trained, tmp_path):
  """A workdir trained further than the config asks would be evaluated at the wrong step."""
  workdir = str(tmp_path / "wd")
  train.train(tiny_config(num_steps=4), workdir, images=IMAGES)
  with open(os.path.join(workdir, "config.json")) as f:
    before = f.read()
  with pytest.raises(ValueError, match=r"step 4, past train.num_steps=2"):
    train.train(tiny_config(num_steps=2), workdir, images=IMAGES)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == before   # nothing rewritten
