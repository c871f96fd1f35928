"""Chunked softmax accumulators (docs/method.md §5.4 exact StreamingSoftmax and WSSM) against
float64 NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from golddiff_jax import chunking, softmax

LAYOUTS = [  # (B, N, D, per_coordinate): K = 1 (per sample) or K = D (per coordinate)
    (3, 37, 5, False),
    (5, 64, 7, True),
    (1, 9, 3, True),
]
SCALES = ["unit", "huge", "spread"]


def _logits(rng, b, n, k, scale):
  if scale == "unit":
    x = rng.normal(size=(b, n, k)) * 3.0
  elif scale == "huge":  # magnitudes ~1e6 as at t = 0 (docs/method.md §5.4)
    x = -1e6 + rng.normal(size=(b, n, k)) * 30.0
  else:  # differences of ~1e6 between candidates: one-hot-like weights
    x = -rng.uniform(0.0, 1e6, size=(b, n, k))
  return x.astype(np.float32)


# Jitted wrappers (one compile per chunk shape instead of one per eager op and shape).
_UPDATES = {softmax.update_exact: jax.jit(softmax.update_exact),
            softmax.update_wssm: jax.jit(softmax.update_wssm)}
_finalize = jax.jit(softmax.finalize)
_init = jax.jit(softmax.init, static_argnums=(0, 1, 2))
_combine = jax.jit(softmax.combine)


def _random_split(rng, n):
  """A few contiguous chunks: equal sizes plus a partial last one, or two uneven pieces."""
  if n < 3:
    return [np.arange(n)]
  if rng.uniform() < 0.5:
    size = int(rng.integers(1, n))
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]
  cut = int(rng.integers(1, n))
  return [np.arange(cut), np.arange(cut, n)]


def _exact(chunks, logits, values, b, k, d, update=softmax.update_exact):
  """Folds the chunks in the given order. Every chunk is padded to the full width N with −inf
  logits (and finite garbage values), so one compiled update serves every chunking; the padding
  must carry no weight (docs/method.md §5.4 / chunking.py)."""
  n = logits.shape[1]
  state = _init(b, k, d)
  for idx in chunks:
    pad = n - len(idx)
    lg = np.concatenate([logits[:, idx], np.full((b, pad, k), -np.inf, np.float32)], axis=1)
    vals = np.concatenate([values[idx], np.full((pad, d), 7.0, np.float32)])
    state = _UPDATES[update](state, jnp.asarray(lg), jnp.asarray(vals))
  return state


@pytest.mark.parametrize("b,n,d,per_coord", LAYOUTS)
@pytest.mark.parametrize("scale", SCALES)
def test_update_exact_any_chunking_equals_naive(b, n, d, per_coord, scale):
  rng = np.random.default_rng(n * 10 + d)
  k = d if per_coord else 1
  logits = _logits(rng, b, n, k, scale)
  values = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
  want = ref.softmax_mean(logits, values)
  for trial in range(3):
    chunks = [np.arange(n)] if trial == 0 else _random_split(rng, n)
    if trial == 2:  # any order of chunks
      chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    got = np.asarray(_finalize(_exact(chunks, logits, values, b, k, d)))
    assert got.shape == (b, d)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("b,n,d,per_coord", LAYOUTS)
def test_update_exact_ignores_minus_inf_padding(b, n, d, per_coord):
  rng = np.random.default_rng(7 + n)
  k = d if per_coord else 1
  logits = _logits(rng, b, n, k, "huge")
  values = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
  want = ref.softmax_mean(logits, values)
  pad = 2
  padded_logits = np.concatenate([np.full((b, pad, k), -np.inf, np.float32), logits,
                                  np.full((b, pad, k), -np.inf, np.float32)], axis=1)
  padded_values = np.concatenate([rng.uniform(-50, 50, (pad, d)), values,
                                  rng.uniform(-50, 50, (pad, d))]).astype(np.float32)
  # Some −inf entries scattered inside too (only for some (b, k): they must get zero weight).
  holes = rng.uniform(size=padded_logits.shape) < 0.2
  holes[:, pad] = False  # keep at least one finite logit per softmax
  padded_logits = np.where(holes, -np.inf, padded_logits).astype(np.float32)
  want = ref.softmax_mean(padded_logits, padded_values)
  chunks = [np.arange(0, pad)] + [c + pad for c in _random_split(rng, n + pad)]  # first all −inf
  got = np.asarray(_finalize(_exact(chunks, padded_logits, padded_values, b, k, d)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
  assert np.all(np.isfinite(got))


def test_all_minus_inf_chunk_leaves_state_unchanged():
  rng = np.random.default_rng(3)
  logits = _logits(rng, 3, 10, 4, "unit")
  values = rng.uniform(-1, 1, (10, 4)).astype(np.float32)
  state = _exact([np.arange(10)], logits, values, 3, 4, 4)
  for update in _UPDATES.values():
    after = update(state, np.full((3, 10, 4), -np.inf, np.float32),
                   rng.uniform(-9, 9, (10, 4)).astype(np.float32))
    for a, b in zip(after, state):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("b,n,d,per_coord", LAYOUTS)
@pytest.mark.parametrize("scale", SCALES)
def test_combine_equals_one_pass(b, n, d, per_coord, scale):
  rng = np.random.default_rng(n + d + 1)
  k = d if per_coord else 1
  logits = _logits(rng, b, n, k, scale)
  values = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
  # Put the global max in the second part for some softmaxes, in the first for others.
  split = n // 3
  s1 = _exact([np.arange(split)], logits, values, b, k, d)
  s2 = _exact(_random_split(rng, n - split), logits[:, split:], values[split:], b, k, d)
  want = ref.softmax_mean(logits, values)
  for state in (_combine(s1, s2), _combine(s2, s1)):
    np.testing.assert_allclose(np.asarray(_finalize(state)), want, rtol=1e-5, atol=2e-6)
  # Combining with an empty state is the identity.
  empty = _init(b, k, d)
  np.testing.assert_allclose(np.asarray(_finalize(_combine(empty, s1))),
                             ref.softmax_mean(logits[:, :split], values[:split]),
                             rtol=1e-5, atol=2e-6)


def _wssm_ref_chunks(logits, values, chunks):
  """Σ_c Σ_{i∈c} w^{(c)}_i x_i / (Σ_c Σ_{i∈c} w^{(c)}_i + 1e−8) for explicit chunks."""
  means = [ref.softmax_mean(logits[:, c], values[c]) for c in chunks]
  # Each chunk's local weights sum to exactly 1, so WSSM (docs/method.md §5.4) reduces to
  # Σ_c x̂^{(c)} / (C + 1e-8).
  return np.sum(means, axis=0) / (len(chunks) + 1e-8)


@pytest.mark.parametrize("b,n,d,per_coord", LAYOUTS)
@pytest.mark.parametrize("scale", ["unit", "huge"])
def test_update_wssm_is_mean_of_chunk_posterior_means(b, n, d, per_coord, scale):
  rng = np.random.default_rng(n * 3 + d)
  k = d if per_coord else 1
  logits = _logits(rng, b, n, k, scale)
  values = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
  chunks = _random_split(rng, n)
  got = np.asarray(_finalize(_exact(chunks, logits, values, b, k, d,
                                           update=softmax.update_wssm)))
  want = _wssm_ref_chunks(logits, values, chunks)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
  if len(chunks) > 1 and scale == "unit":  # WSSM is biased: it differs from the exact softmax
    assert np.abs(got - ref.softmax_mean(logits, values)).max() > 1e-3


@pytest.mark.parametrize("b,n,d,per_coord,chunk", [
    (3, 37, 5, False, 10),   # last chunk 7 of 10
    (5, 64, 7, True, 21),    # last chunk 1 of 21
])
def test_softmax_average_exact_and_wssm(b, n, d, per_coord, chunk):
  """chunking.softmax_average pads the last chunk with −inf rows: exact is unchanged and, for
  WSSM, a partial last chunk counts as one chunk (docs/method.md §5.4)."""
  rng = np.random.default_rng(n + chunk)
  k = d if per_coord else 1
  database = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
  query = rng.uniform(-1, 1, size=(b, d)).astype(np.float32)
  proj = rng.normal(size=(d, k)).astype(np.float32)

  def logits_fn(chunk_rows):  # any function of the chunk: −|q − x|² projected to K softmaxes
    diff = query[:, None, :] - chunk_rows[None]
    return -5.0 * jnp.einsum("bnd,dk->bnk", diff * diff, jnp.asarray(proj) ** 2)

  @functools.partial(jax.jit, static_argnames="mode")
  def run(database, mode):
    return chunking.softmax_average(database, logits_fn, batch=b, num_softmaxes=k,
                                    chunk_size=chunk, mode=mode)

  diff64 = query[:, None, :].astype(np.float64) - database[None]
  logits = -5.0 * np.einsum("bnd,dk->bnk", diff64**2, proj.astype(np.float64) ** 2)
  for mode in ("exact", "wssm"):
    state = run(jnp.asarray(database), mode)
    got = np.asarray(_finalize(state))
    if mode == "exact":
      want = ref.softmax_mean(logits, database)
    else:
      want = ref.wssm_mean(logits, database, min(chunk, n))
      assert np.isclose(np.asarray(state.total), -(-n // min(chunk, n)), rtol=1e-5).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=mode)


def test_split_chunks_padding():
  db = np.arange(22, dtype=np.float32).reshape(11, 2)
  chunks, valid = jax.jit(chunking.split_chunks, static_argnums=1)(db, 4)
  assert chunks.shape == (3, 4, 2) and valid.shape == (3, 4)
  np.testing.assert_array_equal(np.asarray(valid).ravel(), np.arange(12) < 11)
  np.testing.assert_array_equal(np.asarray(chunks).reshape(12, 2)[:11], db)


@pytest.mark.parametrize("update", [softmax.update_exact, softmax.update_wssm])
@pytest.mark.parametrize("scale", SCALES)
def test_updates_with_candidates_on_the_last_axis(update, scale):
  """``axis`` and ``weighted`` let the updates run in another layout (the tiled PCA-locality form
  keeps candidates minor): logits [K, B, c] give the [B, c, K] answer, in the transposed state."""
  b, n, d = 4, 23, 6
  rng = np.random.default_rng(5)
  logits = _logits(rng, b, n, d, scale)
  values = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
  chunks = _random_split(rng, n)
  want = _init(b, d, d)
  got = softmax.SoftmaxState(*(v.T for v in _init(b, d, d)))  # [K, B]
  weighted = lambda p, v: jnp.einsum("kbi,ik->kb", p, v, precision="highest")
  moved = jax.jit(functools.partial(update, weighted=weighted, axis=-1))
  for idx in chunks:
    want = _UPDATES[update](want, jnp.asarray(logits[:, idx]), jnp.asarray(values[idx]))
    got = moved(got, jnp.asarray(logits[:, idx].transpose(2, 0, 1)), jnp.asarray(values[idx]))
  for w, g in zip(want, got):
    np.testing.assert_allclose(np.asarray(g).T, np.asarray(w), rtol=1e-5, atol=1e-6)
  if update is softmax.update_exact:
    np.testing.assert_allclose(np.asarray(_finalize(want)),
                               ref.softmax_mean(logits.astype(np.float64), values), rtol=1e-4,
                               atol=1e-5)
