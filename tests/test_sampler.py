"""The DDIM sampling loop (docs/method.md §2.3–2.5) via gd.sample, against a float64 NumPy
re-implementation of the whole loop.

Tolerances: per-step float32 errors are ~1e−6 and DDIM does not amplify them much, so the x̂_0
trajectory matches to atol 1e−4 for t ≥ 100. At t = 0 (logits ~1e4–1e6) a near-tie between
candidates could move weights visibly, so the last step gets atol 2e−3.
"""

import jax
import jax.monitoring
import numpy as np
import pytest

import golddiff_jax as gd
import reference as ref
from golddiff_jax import masks
from golddiff_jax.data import procedural_images
from golddiff_jax.denoisers import wiener as wiener_mod

DATASETS = {"rgb6x5": (80, 6, 5, 3, 3), "gray8x8": (64, 8, 8, 1, 5)}  # (N, H, W, C, B)
METHOD_NAMES = ["optimal", "wiener", "pca_locality"]
_CACHE = {}


def _data(name):
  if name not in _CACHE:
    n, h, w, c, b = DATASETS[name]
    images = procedural_images(n, h, w, c, seed=4)
    latents = np.asarray(gd.noise(jax.random.key(3), b, (h, w, c)))
    _CACHE[name] = (images, gd.fit(images), latents)
  return _CACHE[name]


def _ref_denoiser(method, images, stats, theta=0.05):
  db = ref.flatten(images)
  if method == "optimal":
    return lambda x, t, abar: ref.optimal(db, x, abar)
  if method == "wiener":
    return lambda x, t, abar: ref.wiener(db, x, abar)
  # The mask comes from golddiff_jax.masks (checked against float64 in test_masks.py): a float32
  # vs float64 flip of one entry near τ would otherwise change the estimator discontinuously.
  return lambda x, t, abar: ref.pca_locality(
      db, x, abar, np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, abar, theta)))


def _check_trajectory(got, want, ts):
  for j, t in enumerate(ts):
    atol = 2e-3 if t == 0 else 1e-4
    np.testing.assert_allclose(got[j], want[j], rtol=1e-4, atol=atol, err_msg=f"t={t}")


@pytest.mark.parametrize("name,method", [("rgb6x5", "optimal"), ("rgb6x5", "wiener"),
                                         ("rgb6x5", "pca_locality"), ("gray8x8", "pca_locality")])
def test_sample_matches_numpy_ddim(name, method):
  images, stats, latents = _data(name)
  n, h, w, c, b = DATASETS[name]
  out = gd.sample(stats, latents, method=method, num_steps=10, key=jax.random.key(0))
  assert isinstance(out, gd.SampleOutput)
  assert out.images.shape == (b, h, w, c)
  assert out.x0_trajectory.shape == (10, b, h, w, c)
  np.testing.assert_array_equal(out.images, out.x0_trajectory[-1])
  np.testing.assert_array_equal(out.timesteps, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
  for arr in (out.step_seconds, out.compile_seconds):
    assert arr.shape == (10,)
    assert np.all(np.isfinite(arr)) and np.all(arr >= 0)
  assert np.isfinite(out.prepare_seconds) and out.prepare_seconds > 0
  want, ts = ref.ddim_sample(_ref_denoiser(method, images, stats), latents.reshape(b, -1), 10)
  _check_trajectory(out.x0_trajectory.reshape(10, b, -1), want, ts)


def test_wiener_sample_needs_the_clip():
  """Wiener x̂_0 leaves [−1, 1], so the DDIM clip matters; the test above would catch its absence."""
  images, stats, latents = _data("rgb6x5")
  b = latents.shape[0]
  fn = _ref_denoiser("wiener", images, stats)
  want, _ = ref.ddim_sample(fn, latents.reshape(b, -1), 10)
  assert np.abs(want[:-1]).max() > 1.0
  # The same loop without the clip diverges from the clipped one by far more than the tolerance.
  x = latents.reshape(b, -1).astype(np.float64)
  for j, t in enumerate(ref.leading_timesteps(10)):
    x0 = fn(x, t, ref.ABAR[t])
    ab, abp = ref.ABAR[t], ref.abar_prev(int(t), 10)
    x = np.sqrt(abp) * x0 + np.sqrt(1 - abp) * (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
  assert np.abs(x0 - want[-1]).max() > 1e-3
  out = gd.sample(stats, latents, method="wiener")
  np.testing.assert_allclose(out.images.reshape(b, -1), want[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_steps,expected", [(4, [750, 500, 250, 0]), (3, [666, 333, 0]),
                                                (1, [0])])
def test_other_step_counts_use_leading_spacing(num_steps, expected):
  images, stats, latents = _data("gray8x8")
  b = latents.shape[0]
  out = gd.sample(stats, latents, method="wiener", num_steps=num_steps)
  np.testing.assert_array_equal(out.timesteps, expected)
  assert out.x0_trajectory.shape == (num_steps, *latents.shape)
  assert out.step_seconds.shape == (num_steps,)
  want, ts = ref.ddim_sample(_ref_denoiser("wiener", images, stats), latents.reshape(b, -1),
                             num_steps)
  np.testing.assert_array_equal(ts, expected)
  _check_trajectory(out.x0_trajectory.reshape(num_steps, b, -1), want, ts)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_sample_is_deterministic(method):
  _, stats, latents = _data("rgb6x5")
  key = jax.random.key(11)
  first = gd.sample(stats, latents, method=method, key=key)
  second = gd.sample(stats, latents, method=method, key=key)
  np.testing.assert_array_equal(first.x0_trajectory, second.x0_trajectory)
  np.testing.assert_array_equal(first.images, second.images)


class _CompileCounter:
  """Counts XLA backend compilations (jax.monitoring events) inside a `with` block."""

  EVENT = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.count = 0

  def _listener(self, event, duration, **kwargs):
    del duration, kwargs
    if event == self.EVENT:
      self.count += 1

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._listener)


def test_no_recompilation_for_same_shaped_batch(monkeypatch):
  """A second batch of the same shape with different values neither retraces nor recompiles.

  Shapes unique to this test (N=23, 3×7×2, B=7) guarantee the first run traces and compiles, which
  shows the two detectors work; a third run with another batch size must retrace (sanity check).
  Note: ``sampler._step._cache_size()`` cannot be used, as the sampler compiles ahead of time via
  ``_step.lower(...).compile()``, which bypasses the jit call cache (it stays 0).
  """
  images = procedural_images(23, 3, 7, 2, seed=12)
  stats = gd.fit(images)
  traces = []
  original = wiener_mod.apply

  def counting_apply(*args, **kwargs):
    traces.append(1)
    return original(*args, **kwargs)

  monkeypatch.setitem(gd.METHODS, "wiener", gd.METHODS["wiener"].replace(apply=counting_apply))
  rng = np.random.default_rng(0)
  batch1 = rng.normal(size=(7, 3, 7, 2)).astype(np.float32)
  batch2 = rng.normal(size=(7, 3, 7, 2)).astype(np.float32)
  batch3 = rng.normal(size=(6, 3, 7, 2)).astype(np.float32)
  with _CompileCounter() as first:
    out1 = gd.sample(stats, batch1, method="wiener")
  assert len(traces) >= 1 and first.count >= 1
  traces_after_first = len(traces)
  with _CompileCounter() as second:
    out2 = gd.sample(stats, batch2, method="wiener")
  assert len(traces) == traces_after_first, "retraced for a same-shaped batch"
  assert second.count == 0, "recompiled for a same-shaped batch"
  assert not np.allclose(out1.images, out2.images)  # really a different batch
  with _CompileCounter() as third:
    gd.sample(stats, batch3, method="wiener")
  assert len(traces) > traces_after_first and third.count >= 1
