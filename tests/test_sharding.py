"""Sharded database and batch (golddiff_jax.sharding): the answer must not depend on the mesh.

Every method's trajectory on 1, 2 and 8 fake CPU devices (and a 2 × 4 batch × data mesh) must
equal the unsharded one to float rounding: relative Frobenius difference ≤ 1e-4 per step, the
issue's bar. The database size (203) does not divide by 2 or 8, so the padding path is always
exercised, and the latents are fresh noise (held out from the database).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import golddiff_jax as gd
from golddiff_jax import schedules, select, sharding, softmax, stats as stats_lib
from golddiff_jax.data import procedural_images

N, SHAPE, BATCH = 203, (8, 8, 3), 4
MESHES = [(2, 1), (8, 1), (4, 2)]  # (data, batch); the unsharded run is the 1-device answer
METHODS = {
    "optimal": {},
    "wiener": {},
    "pca_locality": {"mask_threshold": 0.05},
    "golddiff": {"k_min": 20, "k_max": 40, "low_res_dim": 4},
}
_CACHE = {}


def _data():
  if "data" not in _CACHE:
    images = procedural_images(N, *SHAPE, seed=11)
    latents = np.asarray(gd.noise(jax.random.key(5), BATCH, SHAPE))
    _CACHE["data"] = images, gd.fit(images), latents
  return _CACHE["data"]


def _rel(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check_same(got, want):
  for j in range(want.shape[0]):
    assert _rel(got[j], want[j]) <= 1e-4, f"step {j}: {_rel(got[j], want[j])}"


def test_make_mesh_axes_and_errors():
  mesh = gd.make_mesh()
  assert mesh.axis_names == ("batch", "data") and mesh.shape["data"] == 8
  mesh = gd.make_mesh(data=2, batch=4)
  assert (mesh.shape["batch"], mesh.shape["data"]) == (4, 2)
  with pytest.raises(ValueError, match="needs 16 devices"):
    gd.make_mesh(data=4, batch=4)
  with pytest.raises(ValueError, match="batch must be >= 1"):
    gd.make_mesh(batch=0)
  with pytest.raises(ValueError, match="'data' axis"):
    sharding.check_mesh(jax.make_mesh((8,), ("x",)))
  with pytest.raises(ValueError, match="jax.sharding.Mesh"):
    sharding.check_mesh("data")


@pytest.mark.parametrize("devices", [2, 8])
def test_shard_stats_holds_one_slice_per_device(devices):
  images, stats, _ = _data()
  mesh = gd.make_mesh(data=devices)
  sharded = gd.shard_stats(stats, mesh)
  rows = -(-N // devices)
  assert sharded.num_images == N and sharded.database.shape == (rows * devices, stats.dim)
  assert sharded.mesh == mesh
  for shard in sharded.database.addressable_shards:  # N/devices·D per device, no replica
    assert shard.data.shape == (rows, stats.dim)
  for shard in sharded.sq_norms.addressable_shards:
    assert shard.data.shape == (rows,)
  np.testing.assert_array_equal(np.asarray(sharded.images), np.asarray(stats.database))
  np.testing.assert_array_equal(np.asarray(sharded.database)[N:], 0.0)
  assert gd.shard_stats(sharded, mesh) is sharded
  direct = gd.fit(images, mesh=mesh)  # host → shards, never whole on one device
  assert direct.num_images == N and direct.mesh == mesh
  np.testing.assert_allclose(np.asarray(direct.eigvals), np.asarray(stats.eigvals))
  np.testing.assert_array_equal(np.asarray(direct.database), np.asarray(sharded.database))


@pytest.mark.parametrize("data,batch", [(8, 1), (3, 2)])
def test_process_local_fit_equals_fit(data, batch):
  """Single process: the multi-host path (reduce, assemble, reorder) gives `fit`'s stats.
  Two real processes: tests/test_multihost.py (slow)."""
  images, _, _ = _data()
  mesh = gd.make_mesh(data=data, batch=batch)
  got = stats_lib.fit_process_local(images, mesh=mesh, chunk_size=50)
  want = gd.fit(images, mesh=mesh)
  assert got.num_images == N and got.mesh == mesh
  for name in ("database", "sq_norms", "mean", "eigvals"):
    np.testing.assert_allclose(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)),
                               rtol=1e-6, atol=1e-6, err_msg=name)


def test_sharded_stats_save_load_round_trip(tmp_path):
  _, stats, _ = _data()
  sharded = gd.shard_stats(stats, gd.make_mesh(data=8))
  gd.save_stats(sharded, str(tmp_path / "s.npz"))
  loaded = gd.load_stats(str(tmp_path / "s.npz"))
  assert loaded.num_images == N and loaded.database.shape == (N, stats.dim)
  np.testing.assert_array_equal(np.asarray(loaded.database), np.asarray(stats.database))


def _check_meshes(method, num_steps, meshes):
  _, stats, latents = _data()
  options = METHODS[method]
  key = jax.random.key(9)
  want = gd.sample(stats, latents, method=method, num_steps=num_steps, key=key, **options)
  for data, batch in meshes:
    mesh = gd.make_mesh(data=data, batch=batch)
    got = gd.sample(stats, latents, method=method, num_steps=num_steps, key=key, mesh=mesh,
                    **options)
    _check_same(got.x0_trajectory, want.x0_trajectory)


@pytest.mark.parametrize("method", list(METHODS))
def test_trajectories_do_not_depend_on_the_mesh(method):
  # GoldDiff compiles one variant per step and mesh: 3 steps keep the default suite fast.
  _check_meshes(method, 3 if method == "golddiff" else 5, MESHES)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_ten_step_trajectories_on_every_mesh(method):
  _check_meshes(method, 10, [(1, 1), *MESHES])


def test_tiled_pca_locality_does_not_depend_on_the_mesh():
  """The tiled mask form (one state layout per shard, merged in natural coordinates) on a 2 × 4
  mesh equals the dense form on one device."""
  _, stats, latents = _data()
  key = jax.random.key(3)
  options = {**METHODS["pca_locality"], "mask_tile": 3}
  want = gd.sample(stats, latents, method="pca_locality", num_steps=3, key=key,
                   mask_impl="dense", **options)
  got = gd.sample(stats, latents, method="pca_locality", num_steps=3, key=key,
                  mesh=gd.make_mesh(data=4, batch=2), mask_impl="tiled", **options)
  _check_same(got.x0_trajectory, want.x0_trajectory)


@pytest.mark.parametrize("options", [
    {"select": "threshold"},
    {"random_retrieval": True},
    {"low_res_dim": 8},                                    # identity proxy
    {"proxy_repeat_factor": 4, "proxy_upsample_mode": "bilinear"},
    {"k_min": N, "k_max": N},                              # k = N: the whole database
])
def test_golddiff_variants_do_not_depend_on_the_mesh(options):
  _, stats, latents = _data()
  options = {**METHODS["golddiff"], **options}
  key = jax.random.key(2)
  want = gd.sample(stats, latents, method="golddiff", num_steps=2, key=key, **options)
  got = gd.sample(stats, latents, method="golddiff", num_steps=2, key=key,
                  mesh=gd.make_mesh(data=8), **options)
  _check_same(got.x0_trajectory, want.x0_trajectory)


def test_denoise_with_mesh_matches_and_sharded_stats_bring_their_mesh():
  images, stats, _ = _data()
  held_out = procedural_images(BATCH, *SHAPE, seed=99)
  noise = np.asarray(gd.noise(jax.random.key(1), BATCH, SHAPE))
  t = 400
  abar = float(schedules.alphas_cumprod()[t])
  x_t = np.sqrt(abar) * held_out + np.sqrt(1 - abar) * noise
  for method, options in METHODS.items():
    want = np.asarray(gd.denoise(stats, x_t, t, method=method, **options))
    got = np.asarray(gd.denoise(stats, x_t, t, method=method, mesh=gd.make_mesh(data=8),
                                **options))
    assert _rel(got, want) <= 1e-4, method
  sharded = gd.shard_stats(stats, gd.make_mesh(data=2, batch=4))
  out = gd.sample(sharded, noise, method="pca_locality", num_steps=2)  # runs on sharded.mesh
  ref = gd.sample(stats, noise, method="pca_locality", num_steps=2)
  _check_same(out.x0_trajectory, ref.x0_trajectory)


def test_mesh_errors():
  _, stats, latents = _data()
  mesh = gd.make_mesh(data=2, batch=4)
  with pytest.raises(ValueError, match="does not divide over the mesh's 4 'batch' devices"):
    gd.sample(stats, latents[:3], method="optimal", mesh=mesh)
  with pytest.raises(ValueError, match="wssm"):
    gd.sample(stats, latents, method="pca_locality", softmax="wssm", mesh=mesh)
  with pytest.raises(ValueError, match="jax.sharding.Mesh"):
    gd.sample(stats, latents, method="optimal", mesh="8")


def _on_shards(fn, mesh, in_specs, out_specs, *args):
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                               check_vma=False))(*args)


@pytest.mark.parametrize("k", [1, 7, 40, 64])
def test_sharded_smallest_mask_equals_one_device_with_ties(k):
  rng = np.random.default_rng(k)
  keys = rng.integers(0, 6, size=(3, 64)).astype(np.uint32)  # heavy ties
  want = np.asarray(select.smallest_mask(jnp.asarray(keys), k))
  mesh = gd.make_mesh(data=8)
  got = _on_shards(lambda x: select.smallest_mask(x, k, axis_name="data"), mesh, P(None, "data"),
                   P(None, "data"), jnp.asarray(keys))
  np.testing.assert_array_equal(np.asarray(got), want)
  assert (np.asarray(got).sum(axis=1) == k).all()


def test_merge_smallest_and_combine_softmax_match_one_device():
  rng = np.random.default_rng(0)
  mesh = gd.make_mesh(data=8)
  scores = rng.standard_normal((2, 8 * 6)).astype(np.float32)
  index = np.broadcast_to(np.arange(48, dtype=np.int32), scores.shape)

  def merge(s, i):
    values, idx = select.select(s, 3)  # each shard's 3 best, then the global 5
    return sharding.merge_smallest(values, jnp.take_along_axis(i, idx, axis=1), 5)

  values, idx = _on_shards(merge, mesh, (P(None, "data"), P(None, "data")), (P(), P()),
                           jnp.asarray(scores), jnp.asarray(index))
  order = np.argsort(scores, axis=1, kind="stable")[:, :5]
  np.testing.assert_array_equal(np.asarray(idx), order)
  np.testing.assert_allclose(np.asarray(values), np.take_along_axis(scores, order, axis=1))

  logits = rng.standard_normal((2, 48, 1)).astype(np.float32) * 30
  logits[:, 8:16] = -np.inf  # one shard with nothing valid
  values = rng.standard_normal((48, 5)).astype(np.float32)

  def partial(lg, v):
    state = softmax.update_exact(softmax.init(2, 1, 5), lg, v)
    return softmax.finalize(sharding.combine_softmax(state))

  got = _on_shards(partial, mesh, (P(None, "data"), P("data")), P(), jnp.asarray(logits),
                   jnp.asarray(values))
  w = np.exp(logits[..., 0].astype(np.float64) - logits[..., 0].max(axis=1, keepdims=True))
  want = (w / w.sum(axis=1, keepdims=True)) @ values.astype(np.float64)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["optimal", "golddiff"])
def test_user_built_explicit_mesh_works(method):
  """A mesh from plain `jax.make_mesh` (Explicit axes, no 'batch' axis) is accepted too."""
  _, stats, latents = _data()
  options = METHODS[method]
  key = jax.random.key(4)
  want = gd.sample(stats, latents, method=method, num_steps=2, key=key, **options)
  got = gd.sample(stats, latents, method=method, num_steps=2, key=key,
                  mesh=jax.make_mesh((8,), ("data",)), **options)
  _check_same(got.x0_trajectory, want.x0_trajectory)


def test_stats_sharded_on_one_mesh_run_on_another():
  _, stats, latents = _data()
  on_two = gd.shard_stats(stats, gd.make_mesh(data=2))
  mesh = gd.make_mesh(data=4, batch=2)
  moved = gd.shard_stats(on_two, mesh)
  assert moved.mesh == mesh and moved.num_images == N
  np.testing.assert_array_equal(np.asarray(moved.images), np.asarray(stats.database))
  want = gd.sample(stats, latents, method="optimal", num_steps=2)
  got = gd.sample(on_two, latents, method="optimal", num_steps=2, mesh=gd.make_mesh(data=8))
  _check_same(got.x0_trajectory, want.x0_trajectory)
