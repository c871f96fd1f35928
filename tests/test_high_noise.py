"""Closed-form high-noise steps (golddiff_jax.high_noise) against float64 NumPy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from golddiff_jax import high_noise


def _data(seed, n=60, d=12):
  rng = np.random.default_rng(seed)
  y = rng.normal(size=(n, d)) * rng.uniform(0.2, 1.0, size=d) + rng.normal(size=d)
  mask = (rng.uniform(size=(d, d)) < 0.5).astype(np.float64)
  np.fill_diagonal(mask, 1.0)
  x = rng.normal(size=(5, d))
  return y, mask, x


def _logits(y, mask, x, abar, temperature=1.0):
  """ℓ[b, i, m] = −Σ_n (x[b, n] − a y[i, n])² M[n, m] / (2(1 − ᾱ)T), float64."""
  diff = x[:, None, :] - np.sqrt(abar) * y[None]
  return -np.einsum("bin,nm->bim", diff ** 2, mask) / (2 * (1 - abar) * temperature)


def _softmax_mean(y, logits):
  w = np.exp(logits - logits.max(axis=1, keepdims=True))
  return np.einsum("bim,im->bm", w, y) / w.sum(axis=1)


def test_moments_match_float64_and_ignore_padding():
  y, _, _ = _data(0)
  padded = np.concatenate([y, np.full((4, y.shape[1]), 7.0)]).astype(np.float32)
  got = high_noise.database_moments(jnp.asarray(padded), num_valid=y.shape[0])
  centred = y - y.mean(0)
  np.testing.assert_allclose(got.mean, y.mean(0), atol=1e-5)
  np.testing.assert_allclose(got.cov, centred.T @ centred / len(y), atol=2e-5)
  skew = (y ** 2 - (y ** 2).mean(0)).T @ centred / len(y)
  np.testing.assert_allclose(got.skew, skew, atol=5e-5)


@pytest.mark.parametrize("seed, temperature", [(1, 1.0), (2, 0.7)])
def test_expansion_is_the_first_order_covariance_term(seed, temperature):
  """x̂ = ȳ + Cov_i(ℓ_i[m], y_i[m]) computed from explicit float64 logits (another route)."""
  y, mask, x = _data(seed)
  abar = 0.003
  logits = _logits(y, mask, x, abar, temperature)
  want = y.mean(0) + np.mean((logits - logits.mean(1, keepdims=True))
                             * (y - y.mean(0))[None], axis=1)
  moments = high_noise.database_moments(jnp.asarray(y, jnp.float32))
  step = high_noise.prepare(moments, mask, abar, temperature)
  got = high_noise.apply(step, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_error_against_the_exact_softmax_shrinks_like_a_squared():
  y, mask, x = _data(3)
  moments = high_noise.database_moments(jnp.asarray(y, jnp.float32))
  errors = []
  for abar in (4e-4, 1.6e-3, 6.4e-3):  # a doubles each time
    exact = _softmax_mean(y, _logits(y, mask, x, abar))
    got = np.asarray(high_noise.apply(high_noise.prepare(moments, mask, abar),
                                      jnp.asarray(x, jnp.float32)))
    deviation = np.abs(exact - y.mean(0)).max()
    errors.append(np.abs(got - exact).max())
    assert errors[-1] < 0.2 * deviation  # it captures most of the x-dependent part
  ratios = errors[1] / errors[0], errors[2] / errors[1]
  assert all(2.5 < r < 6.0 for r in ratios), (errors, ratios)


@pytest.mark.parametrize("call, message", [
    (lambda m: high_noise.prepare(m, np.eye(12), 1.0), "abar"),
    (lambda m: high_noise.prepare(m, np.eye(12), 0.5, 0.0), "temperature"),
    (lambda m: high_noise.database_moments(jnp.zeros((3, 2)), num_valid=4), "num_valid"),
])
def test_bad_inputs_raise(call, message):
  moments = high_noise.database_moments(jnp.asarray(_data(0)[0], jnp.float32))
  with pytest.raises(ValueError, match=message):
    call(moments)
