"""Plans once per run: `gd.prepare`, `gd.sample`/`gd.denoise` on prepared plans, and the batch
loop shared by the launcher and experiments/table1.py (`golddiff_jax.batches`), whose samples
must be exactly those of one `gd.sample(stats, ...)` call per batch."""

import jax
import numpy as np
import pytest

import golddiff_jax as gd
from golddiff_jax import batches, sampler
from golddiff_jax.data import procedural_images

OPTIONS = {
    "golddiff": dict(k_min=3, k_max=6, low_res_dim=2, mask_threshold=0.05),
    "pca_locality": dict(mask_threshold=0.05),
    "wiener": {},
}


@pytest.fixture(scope="module")
def stats():
  return gd.fit(procedural_images(40, 4, 4, 3, seed=5))


def _per_batch(stats, latents, method, batch, key, mesh=None):
  """What the launcher did before plans were prepared once: one full `gd.sample` per batch."""
  outs = [gd.sample(stats, latents[first:first + size], method=method, num_steps=3, mesh=mesh,
                    key=gd.sample_keys(key, first, size), **OPTIONS[method])
          for first, size in batches.spans(len(latents), batch)]
  return np.concatenate([o.x0_trajectory for o in outs], axis=1)


@pytest.mark.parametrize("method", ["golddiff", "pca_locality", "wiener"])
def test_batch_loop_matches_one_sample_call_per_batch(stats, method, monkeypatch):
  latents = np.asarray(gd.noise(jax.random.key(1), 5, stats.image_shape))
  key = jax.random.key(4)
  want = _per_batch(stats, latents, method, 2, key)
  built = []
  prepare = sampler.prepare
  monkeypatch.setattr(sampler, "prepare", lambda *a, **k: built.append(a[4]) or prepare(*a, **k))
  out = batches.sample_method(stats, latents, method=method, num_steps=3, batch=2, key=key,
                              **OPTIONS[method])
  assert built == [2, 1]  # once per distinct batch size, not once per batch
  np.testing.assert_array_equal(out.x0_trajectory, want)
  np.testing.assert_array_equal(out.images, want[-1])
  assert out.step_seconds.shape == (3, 3) and out.num_batches == 3 and out.batch_size == 2
  assert 0 < out.prepare_seconds < out.wall_seconds
  assert out.published_style_seconds_per_batch_step == pytest.approx(out.wall_seconds / 9)


def test_batch_loop_on_the_mesh_matches_per_batch_calls(stats):
  mesh = gd.make_mesh(data=4, batch=2)
  latents = np.asarray(gd.noise(jax.random.key(2), 6, stats.image_shape))
  key = jax.random.key(5)
  want = _per_batch(stats, latents, "golddiff", 4, key, mesh)
  out = batches.sample_method(stats, latents, method="golddiff", num_steps=3, batch=4, key=key,
                              mesh=mesh, **OPTIONS["golddiff"])
  np.testing.assert_array_equal(out.x0_trajectory, want)


def test_prepared_sample_and_denoise_equal_the_one_call_forms(stats):
  latents = np.asarray(gd.noise(jax.random.key(3), 2, stats.image_shape))
  key = gd.sample_keys(jax.random.key(6), 0, 2)
  prepared = gd.prepare(stats, method="golddiff", num_steps=3, batch=2, **OPTIONS["golddiff"])
  assert isinstance(prepared, gd.Prepared) and prepared.num_steps == 3
  assert prepared.method == "golddiff" and prepared.prepare_seconds > 0
  np.testing.assert_array_equal(prepared.timesteps, [666, 333, 0])
  one_call = gd.sample(stats, latents, method="golddiff", num_steps=3, key=key,
                       **OPTIONS["golddiff"])
  for _ in range(2):  # the plans are reused as they are
    out = gd.sample(prepared, latents, key=key)
    np.testing.assert_array_equal(out.x0_trajectory, one_call.x0_trajectory)
    assert out.prepare_seconds == 0.0
  # denoise reuses that step's plan (GoldDiff sizes its plans for the whole run, so compare a
  # method whose plans are per step).
  prepared = gd.prepare(stats, method="pca_locality", num_steps=3, batch=2,
                        **OPTIONS["pca_locality"])
  x0 = gd.denoise(prepared, latents, 333, key=key)
  want = gd.denoise(stats, latents, 333, method="pca_locality", key=key,
                    **OPTIONS["pca_locality"])
  np.testing.assert_array_equal(np.asarray(x0), np.asarray(want))


@pytest.mark.parametrize("call,match", [
    (lambda p, x: gd.sample(p, x[:1]), "plans were prepared for batch=2"),
    (lambda p, x: gd.sample(p, x, method="wiener"), "method: already fixed by the prepared"),
    (lambda p, x: gd.sample(p, x, num_steps=4), "num_steps: already fixed"),
    (lambda p, x: gd.sample(p, x, mask_threshold=0.1), "mask_threshold: already fixed"),
    (lambda p, x: gd.denoise(p, x, 400), "t=400 is not one of the prepared timesteps"),
])
def test_prepared_plans_reject_other_settings(stats, call, match):
  prepared = gd.prepare(stats, method="pca_locality", num_steps=2, batch=2, mask_threshold=0.05)
  x = np.zeros((2, *stats.image_shape), np.float32)
  with pytest.raises(ValueError, match=match):
    call(prepared, x)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="nope", batch=2), "unknown method 'nope'"),
    (dict(method="wiener", batch=0), "batch must be a positive int"),
    (dict(method="wiener", batch=2, num_steps=0), "num_steps must be a positive int"),
    (dict(method="wiener", batch=3, mesh=gd.make_mesh(data=4, batch=2)),
     "batch of 3 does not divide over the mesh's 2 'batch' devices"),
])
def test_prepare_bad_input(stats, kwargs, match):
  with pytest.raises(ValueError, match=match):
    gd.prepare(stats, **kwargs)
