"""Golden-subset retrieval: pre-sampling, chunked running top-k, coarse and fine stages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golddiff_jax import retrieval

pool_mask = jax.jit(retrieval.pool_mask, static_argnums=(1, 2, 3))
random_subset = jax.jit(retrieval.random_subset, static_argnums=(1, 2, 3))


def test_pool_mask_size_determinism_and_independence():
  key = jax.random.key(11)
  mask = np.asarray(pool_mask(key, 8, 100, 30))
  assert mask.shape == (8, 100) and np.all(mask.sum(1) == 30)
  assert len({row.tobytes() for row in mask}) == 8  # every sample draws its own pool
  np.testing.assert_array_equal(mask, np.asarray(pool_mask(key, 8, 100, 30)))
  other = np.asarray(pool_mask(jax.random.key(12), 8, 100, 30))
  assert np.any(other != mask)
  assert retrieval.pool_mask(key, 8, 100, 100) is None


def test_pool_mask_does_not_depend_on_batch_size():
  """Sample b's pool depends on its global index only, not on how many samples run with it."""
  key = jax.random.key(5)
  big = np.asarray(pool_mask(key, 8, 100, 30))
  small = np.asarray(pool_mask(key, 3, 100, 30))
  np.testing.assert_array_equal(big[:3], small)


def test_pool_mask_is_uniform():
  n, m, batch = 40, 10, 1024
  mask = np.asarray(pool_mask(jax.random.key(0), batch, n, m))
  counts = mask.sum(0)
  expected = batch * m / n
  sigma = np.sqrt(batch * (m / n) * (1 - m / n))
  assert np.abs(counts - expected).max() < 5 * sigma


def test_random_subset_distinct():
  sub = np.asarray(random_subset(jax.random.key(1), 4, 50, 12))
  assert sub.shape == (4, 12)
  assert all(len(set(r)) == 12 for r in sub) and sub.min() >= 0 and sub.max() < 50
  full = np.asarray(random_subset(jax.random.key(1), 2, 7, 7))
  np.testing.assert_array_equal(full, np.tile(np.arange(7), (2, 1)))


@pytest.mark.parametrize("chunk, method", [(7, "exact"), (1000, "exact"), (64, "threshold")])
def test_running_smallest_is_chunk_invariant(chunk, method):
  rng = np.random.default_rng(0)
  scores = rng.standard_normal((3, 250)).astype(np.float32)

  def score_fn(start, size):
    return jax.lax.dynamic_slice_in_dim(jnp.asarray(scores), start, size, axis=1)

  values, index = retrieval.running_smallest(score_fn, 250, 20, 3, chunk=chunk, method=method)
  expected = np.argsort(scores, axis=1)[:, :20]
  np.testing.assert_array_equal(np.sort(np.asarray(index), 1), np.sort(expected, 1))
  np.testing.assert_allclose(np.sort(np.asarray(values), 1),
                             np.take_along_axis(scores, expected, 1))


def _problem(seed=0, n=120, d_p=12, d=30, batch=3):
  rng = np.random.default_rng(seed)
  proxy = rng.uniform(-1, 1, (n, d_p)).astype(np.float32)
  data = rng.uniform(-1, 1, (n, d)).astype(np.float32)
  xq = rng.standard_normal((batch, d_p)).astype(np.float32)
  xt = rng.standard_normal((batch, d)).astype(np.float32)
  return proxy, data, xq, xt


def test_coarse_screen_matches_numpy():
  proxy, _, xq, _ = _problem()
  a = np.float32(0.7)
  pool = np.asarray(pool_mask(jax.random.key(3), 3, 120, 50))
  got = retrieval.coarse_screen(jnp.asarray(proxy), jnp.asarray((proxy**2).sum(1)),
                                jnp.asarray(xq), a, jnp.asarray(pool), 15, chunk=33)
  dist = ((xq[:, None, :].astype(np.float64) - a * proxy[None]) ** 2).sum(-1)
  dist[~pool] = np.inf
  expected = np.argsort(dist, axis=1)[:, :15]
  np.testing.assert_array_equal(np.sort(np.asarray(got), 1), np.sort(expected, 1))
  assert np.all(pool[np.arange(3)[:, None], np.asarray(got)])


def test_fine_select_matches_numpy():
  _, data, _, xt = _problem(1)
  a = np.float32(0.4)
  rng = np.random.default_rng(1)
  cand = np.stack([rng.permutation(120)[:40] for _ in range(3)]).astype(np.int32)
  got = retrieval.fine_select(jnp.asarray(data), jnp.asarray((data**2).sum(1)), jnp.asarray(xt),
                              a, jnp.asarray(cand), 9, chunk=16)
  dist = ((xt[:, None, :].astype(np.float64) - a * data[cand]) ** 2).sum(-1)
  expected = np.take_along_axis(cand, np.argsort(dist, 1)[:, :9], 1)
  np.testing.assert_array_equal(np.sort(np.asarray(got), 1), np.sort(expected, 1))


def test_golden_subset_full_pool_is_k_nearest():
  """m = N and an exact proxy (the data itself): S = the k nearest images in L2."""
  _, data, _, xt = _problem(2)
  a = np.float32(0.9)
  sq = jnp.asarray((data**2).sum(1))
  got = retrieval.golden_subset(jnp.asarray(data), sq, jnp.asarray(data), sq, jnp.asarray(xt),
                                jnp.asarray(xt), a, jax.random.key(0), m=120, k=11,
                                survivors=30, coarse_chunk=50, fine_chunk=8)
  dist = ((xt[:, None, :].astype(np.float64) - a * data[None]) ** 2).sum(-1)
  expected = np.argsort(dist, 1)[:, :11]
  np.testing.assert_array_equal(np.sort(np.asarray(got), 1), np.sort(expected, 1))
