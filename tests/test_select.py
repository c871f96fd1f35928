"""Top-k strategies: exactness against NumPy, recall of the approximate ones, ties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golddiff_jax import select


def _multiset_recall(scores, values, k):
  """Fraction of the true k smallest values (as a multiset, so ties count once each) returned."""
  recalls = []
  for row, got in zip(scores, values):
    truth = np.sort(row)[:k]
    tv, tc = np.unique(truth, return_counts=True)
    gv, gc = np.unique(got, return_counts=True)
    common = dict(zip(gv, gc))
    recalls.append(sum(min(c, common.get(v, 0)) for v, c in zip(tv, tc)) / k)
  return np.asarray(recalls)


def _check_consistent(scores, values, index, k):
  values, index = np.asarray(values), np.asarray(index)
  assert values.shape == index.shape == scores.shape[:-1] + (k,)
  np.testing.assert_array_equal(np.take_along_axis(scores, index, axis=-1), values)
  flat = index.reshape(-1, k)
  assert all(len(set(row)) == k for row in flat)


def test_exact_equals_numpy_argsort():
  rng = np.random.default_rng(0)
  scores = rng.standard_normal((2, 3, 500)).astype(np.float32)
  values, index = select.select(jnp.asarray(scores), 37, method="exact")
  expected = np.argsort(scores, axis=-1, kind="stable")[..., :37]
  np.testing.assert_array_equal(np.asarray(index), expected)
  np.testing.assert_array_equal(np.asarray(values), np.take_along_axis(scores, expected, -1))


@pytest.mark.parametrize("method", ["exact", "approx", "threshold"])
def test_exact_methods_with_ties(method):
  rng = np.random.default_rng(1)
  scores = np.round(rng.standard_normal((2, 2, 777)) * 3).astype(np.float32)  # heavy ties
  scores[0, 0, :] = 1.0  # one row entirely tied
  scores[0, 1, :5] = -0.0
  scores[0, 1, 5:9] = 0.0
  scores[1, 0, :100] = np.inf
  k = 64
  values, index = jax.jit(lambda s: select.select(s, k, method=method))(jnp.asarray(scores))
  _check_consistent(scores, values, index, k)
  np.testing.assert_array_equal(np.sort(np.asarray(values), -1), np.sort(scores, -1)[..., :k])


def test_threshold_breaks_ties_towards_low_indices_and_is_index_ordered():
  scores = np.array([[3, 1, 2, 1, 1, 0, 1]], np.float32)
  _, index = select.select(jnp.asarray(scores), 4, method="threshold")
  np.testing.assert_array_equal(np.asarray(index), [[1, 3, 4, 5]])


@pytest.mark.parametrize("ties", [False, True])
def test_bucket_recall(ties):
  rng = np.random.default_rng(2)
  n, k, target = 6000, 40, 0.95
  assert select.num_buckets(k, target) < n  # really bucketed, not the exact fallback
  scores = rng.standard_normal((32, n)).astype(np.float32)
  if ties:
    scores = np.round(scores * 4).astype(np.float32)
  values, index = select.select(jnp.asarray(scores), k, method="bucket", recall_target=target)
  _check_consistent(scores, values, index, k)
  assert _multiset_recall(scores, np.asarray(values), k).mean() >= target
  assert np.all(np.diff(np.asarray(values), axis=-1) >= 0)


def test_bucket_falls_back_to_exact_and_buckets_formula():
  assert select.num_buckets(2500, 0.95) == 48720
  assert select.num_buckets(1, 0.95) == 1
  assert select.num_buckets(10, 1.0) > 10**9
  rng = np.random.default_rng(3)
  scores = rng.standard_normal((3, 1000)).astype(np.float32)
  a = select.select(jnp.asarray(scores), 100, method="bucket")
  b = select.select(jnp.asarray(scores), 100, method="exact")
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


def test_smallest_mask_counts_exactly():
  rng = np.random.default_rng(4)
  keys = rng.integers(0, 50, (5, 300)).astype(np.uint32)  # many ties
  keys[0] = np.iinfo(np.uint32).max
  for k in (1, 150, 300):
    mask = np.asarray(jax.jit(select.smallest_mask, static_argnums=1)(jnp.asarray(keys), k))
    assert np.all(mask.sum(-1) == k)
    for row, m in zip(keys, mask):
      assert row[m].max() <= row[~m].min() if k < 300 else True


def test_sortable_key_preserves_order():
  x = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], np.float32)
  keys = np.asarray(select.sortable_key(jnp.asarray(x))).astype(np.int64)
  assert np.all(np.diff(keys) >= 0) and keys[3] == keys[4]


def test_bad_arguments():
  with pytest.raises(ValueError, match="valid methods.*exact.*approx.*bucket.*threshold"):
    select.select(jnp.zeros((2, 10)), 3, method="heap")
  with pytest.raises(ValueError, match="k must be in"):
    select.select(jnp.zeros((2, 10)), 11)
  with pytest.raises(ValueError, match="recall_target"):
    select.check_recall(0.0)
