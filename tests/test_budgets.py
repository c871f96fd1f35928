"""Budgets m_t / k_t (docs/method.md §6.2–6.4) and the proxy resolution rule
(docs/method.md §6.1)."""

import pytest

from golddiff_jax import budgets, schedules

TIMESTEPS = [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]

# docs/method.md §6.4: (N, k_min, k_max) → [(m_t, k_t)] for t = 900 … 0.
TABLE = {
    "cifar10": ((50000, 2500, 5000), [
        (5006, 5000), (5034, 4998), (5155, 4991), (5579, 4968), (6786, 4901), (9589, 4745),
        (14970, 4446), (23620, 3966), (35428, 3310), (49550, 2525)]),
    "celeba_hq": ((30000, 1500, 3000), [
        (3004, 3000), (3020, 2999), (3093, 2995), (3347, 2981), (4072, 2940), (5754, 2847),
        (8982, 2668), (14172, 2379), (21257, 1986), (29730, 1515)]),
    "afhq": ((14336, 1000, 2000), [
        (2002, 2000), (2009, 1999), (2042, 1997), (2159, 1987), (2490, 1960), (3258, 1898),
        (4733, 1778), (7104, 1586), (10341, 1324), (14213, 1010)]),
    "mnist": ((60000, 3000, 6000), [
        (6007, 6000), (6041, 5998), (6186, 5990), (6695, 5961), (8143, 5881), (11507, 5694),
        (17964, 5335), (28344, 4759), (42514, 3971), (59460, 3030)]),
    "imagenet_class": ((1300, 60, 120), [
        (120, 120), (121, 120), (124, 120), (135, 119), (167, 118), (240, 114), (381, 107),
        (608, 95), (918, 79), (1288, 61)]),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_schedule_matches_spec_table(name):
  (n, k_min, k_max), expected = TABLE[name]
  bounds = budgets.resolve_budgets(n, k_min, k_max)
  abars = [schedules.alpha_bar(t) for t in TIMESTEPS]
  assert budgets.schedule(bounds, abars) == expected


def test_static_ablations_cifar10():
  bounds = budgets.resolve_budgets(50000, 2500, 5000)
  abar = schedules.alpha_bar(300)
  assert budgets.step_budget(bounds, abar, dynamic_m=False) == (27500, 4446)
  assert budgets.step_budget(bounds, abar, dynamic_k=False) == (14970, 3750)
  assert budgets.step_budget(bounds, abar, dynamic_m=False, static_m=70000,
                             dynamic_k=False, static_k=9000) == (50000, 5000)
  sizes = budgets.schedule(bounds, [abar] * 2, dynamic_m=False, static_m=6000,
                           dynamic_k=False, static_k=100)
  assert sizes == [(6000, 100), (6000, 100)]


def test_static_m_below_k_max_is_rejected():
  bounds = budgets.resolve_budgets(50000, 2500, 5000)
  with pytest.raises(ValueError, match="Q-7"):
    budgets.schedule(bounds, [0.5], dynamic_m=False, static_m=4999)
  with pytest.raises(ValueError, match="dynamic_m=False"):
    budgets.schedule(bounds, [0.5], static_m=6000)
  with pytest.raises(ValueError, match="dynamic_k=False"):
    budgets.schedule(bounds, [0.5], static_k=10)


def test_resolve_defaults_and_errors():
  assert budgets.resolve_budgets(50000) == budgets.Budgets(50000, 2500, 5000)
  assert budgets.resolve_budgets(30) == budgets.Budgets(30, 2, 3)
  assert budgets.resolve_budgets(3) == budgets.Budgets(3, 1, 1)
  with pytest.raises(ValueError, match="k_min=10 must be <= k_max=5"):
    budgets.resolve_budgets(100, 10, 5)
  with pytest.raises(ValueError, match="exceeds"):
    budgets.resolve_budgets(100, 10, 101)
  with pytest.raises(ValueError, match="exceeds"):
    budgets.resolve_budgets(100, 101)
  with pytest.raises(ValueError, match="k_min must be >= 1"):
    budgets.resolve_budgets(100, 0, 5)
  with pytest.raises(ValueError, match="must be an int"):
    budgets.resolve_budgets(100, 2.5, 5)


def test_k_between_bounds_and_m_at_least_k_max():
  bounds = budgets.resolve_budgets(1000, 7, 93)
  for t in range(0, 1000, 37):
    m, k = budgets.step_budget(bounds, schedules.alpha_bar(t))
    assert 93 <= m <= 1000 and 7 <= k <= 93


@pytest.mark.parametrize("res, low_res_dim, expected", [
    (32, 16, 16), (64, 16, 16), (28, 16, 14), (30, 16, 15), (8, 16, 8), (32, 0, 16),
    (28, 0, 14), (64, 0, 32), (7, 0, 1), (1, 0, 1), (6, 0, 3), (12, 5, 4)])
def test_proxy_grid(res, low_res_dim, expected):
  assert budgets.proxy_grid((res, res, 3), low_res_dim) == (expected, expected)


def test_proxy_grid_rejects_negative():
  with pytest.raises(ValueError, match="low_res_dim"):
    budgets.proxy_grid((32, 32, 3), -1)
