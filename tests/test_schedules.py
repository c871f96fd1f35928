"""Schedule and DDIM step (docs/method.md §2) against the printed table and float64 NumPy
references."""

import jax.numpy as jnp
import numpy as np
import pytest

import reference as ref
from golddiff_jax import schedules


@pytest.mark.parametrize("t", sorted(ref.SPEC_TABLE))
def test_alpha_bar_matches_spec_table(t):
  abar_s, sigma_s, phi_s, a_s = ref.SPEC_TABLE[t]
  abar = schedules.alpha_bar(t)
  assert abs(abar - float(abar_s)) <= ref.printed_half_ulp(abar_s), (t, abar, abar_s)
  # Derived columns, computed here in float64 from the package's ᾱ.
  sigma = np.sqrt(1.0 - abar)
  assert abs(sigma - float(sigma_s)) <= ref.printed_half_ulp(sigma_s) * 1.01, (t, sigma)
  assert abs((1.0 - sigma) - float(phi_s)) <= ref.printed_half_ulp(phi_s) * 1.01, (t, 1 - sigma)
  assert abs(np.sqrt(abar) - float(a_s)) <= ref.printed_half_ulp(a_s) * 1.01, (t, np.sqrt(abar))


def test_alphas_cumprod_matches_float_references():
  got = schedules.alphas_cumprod()
  assert got.shape == (1000,)
  assert got.dtype == np.float32
  # Bit-exact with the float32 definition of docs/method.md §2.1
  # (same order of operations as diffusers).
  np.testing.assert_array_equal(got.astype(np.float64), ref.alphas_cumprod_f32())
  # And close to the exact float64 product (float32 cumprod error over 1000 factors).
  np.testing.assert_allclose(got, ref.alphas_cumprod_f64(), rtol=2e-4, atol=0)
  assert np.all(np.diff(got) < 0)
  for t in (0, 1, 17, 500, 999):
    assert schedules.alpha_bar(t) == float(ref.alphas_cumprod_f32()[t])


def test_betas_linear_float32():
  b = schedules.betas()
  assert b.dtype == np.float32 and b.shape == (1000,)
  np.testing.assert_allclose(b, np.linspace(1e-4, 0.02, 1000), rtol=1e-6)


def test_ten_timesteps_and_alpha_prev():
  ts = schedules.ddim_timesteps(10)
  np.testing.assert_array_equal(ts, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
  assert schedules.alpha_bar_prev(0, 10) == 1.0
  for t in range(100, 1000, 100):
    assert schedules.alpha_bar_prev(t, 10) == float(ref.ABAR[t - 100])


@pytest.mark.parametrize("num_steps", [1, 3, 4, 7, 10, 50])
def test_leading_timesteps(num_steps):
  ts = schedules.ddim_timesteps(num_steps)
  np.testing.assert_array_equal(ts, ref.leading_timesteps(num_steps))
  for t in ts:
    assert schedules.alpha_bar_prev(int(t), num_steps) == ref.abar_prev(int(t), num_steps)
  assert schedules.alpha_bar_prev(0, num_steps) == 1.0


@pytest.mark.parametrize("bad", [0, -3, 1001, 2.0, "10", None, True])
def test_timesteps_rejects_bad_num_steps(bad):
  with pytest.raises(ValueError, match="num_steps"):
    schedules.ddim_timesteps(bad)


@pytest.mark.parametrize("shape", [(3, 8 * 8 * 1), (5, 6 * 5 * 3)])
@pytest.mark.parametrize("t", [900, 500, 100, 0])
def test_ddim_step_matches_numpy(shape, t):
  rng = np.random.default_rng(t + shape[1])
  x_t = rng.normal(size=shape).astype(np.float32)
  # x̂_0 well outside [−1, 1] so that the clip matters in the position term.
  x0 = rng.uniform(-3.0, 3.0, size=shape).astype(np.float32)
  assert np.mean(np.abs(x0) > 1) > 0.4
  abar_t = ref.ABAR[t]
  abar_p = ref.abar_prev(t, 10)
  got = np.asarray(schedules.ddim_step(jnp.asarray(x_t), jnp.asarray(x0), abar_t, abar_p))
  want = ref.ddim_step(x_t, x0, abar_t, abar_p)
  scale = 1.0 + np.abs(want)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.max(scale))
  # The two wrong variants (ε̂ from the clipped x̂_0; no clip at all) differ clearly.
  if t != 0:
    eps_clipped = (x_t - np.sqrt(abar_t) * np.clip(x0, -1, 1)) / np.sqrt(1 - abar_t)
    wrong1 = np.sqrt(abar_p) * np.clip(x0, -1, 1) + np.sqrt(1 - abar_p) * eps_clipped
    assert np.max(np.abs(wrong1 - want)) > 1e-2
  wrong2 = (np.sqrt(abar_p) * x0
            + np.sqrt(1 - abar_p) * (x_t - np.sqrt(abar_t) * x0) / np.sqrt(1 - abar_t))
  assert np.max(np.abs(wrong2 - want)) > 1e-2


@pytest.mark.parametrize("t", [0, 100])
def test_last_step_returns_clipped_x0(t):
  rng = np.random.default_rng(5)
  x_t = rng.normal(size=(3, 30)).astype(np.float32)
  x0 = rng.uniform(-2.5, 2.5, size=(3, 30)).astype(np.float32)
  got = np.asarray(schedules.ddim_step(jnp.asarray(x_t), jnp.asarray(x0), ref.ABAR[t], 1.0))
  np.testing.assert_allclose(got, np.clip(x0, -1.0, 1.0), rtol=0, atol=1e-6)


def test_ddim_states_rebuild_the_visited_states_in_float64():
  rng = np.random.default_rng(11)
  ts = schedules.ddim_timesteps(5)
  latents = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
  x0 = (1.5 * rng.standard_normal((5, 3, 4, 4, 2))).astype(np.float32)  # some beyond ±1
  abar = schedules.alphas_cumprod().astype(np.float64)
  want, x = [], latents.astype(np.float64)
  for j, t in enumerate(ts):
    want.append(x)
    prev = abar[t - 200] if t >= 200 else 1.0
    eps = (x - np.sqrt(abar[t]) * x0[j]) / np.sqrt(1 - abar[t])
    x = np.sqrt(prev) * np.clip(x0[j], -1, 1) + np.sqrt(1 - prev) * eps
  got = schedules.ddim_states(latents, x0, ts)
  assert got.shape == (5, 3, 4, 4, 2)
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="expected"):
    schedules.ddim_states(latents, x0[:4], ts)
