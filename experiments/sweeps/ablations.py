"""GoldDiff ablations (docs/method.md §6.3) on the procedural images
(configs/procedural.py: 32×32×3, N=2000).

    python experiments/sweep.py --sweep=experiments/sweeps/ablations.py --workdir=/tmp/ablations

Every run starts from the same latents (seed 7) and is compared with ``pca_locality``, the exact
full-database PCA-locality estimator that GoldDiff's golden subset approximates (θ = 0.03, the
same mask as GoldDiff). Switches: dynamic vs static pool size m and subset size k, random
retrieval, proxy resolution (low_res_dim, the repeat proxy), and the k budgets. The default
budgets are k_min = 100 = N/20 and k_max = 200 = N/10.

``--sweep_arg=quick`` keeps only the baseline, the default and one run per switch family.
"""

BASE_CONFIG = "configs/procedural.py"
BASELINE = "pca_locality"


def get_sweep(arg=None):
  runs = [
      {"name": "pca_locality", "method": "pca_locality", "denoiser.mask_threshold": 0.03},
      {"name": "golddiff"},
      # m_t / k_t schedules (static_m/static_k unset: ⌊(k_max+N)/2⌋ and ⌊(k_min+k_max)/2⌋).
      {"name": "static_m", "golden.dynamic_m": False},
      {"name": "static_k", "golden.dynamic_k": False},
      {"name": "static_m_k", "golden.dynamic_m": False, "golden.dynamic_k": False},
      {"name": "static_m_full", "golden.dynamic_m": False, "golden.static_m": 2000},
      # Retrieval.
      {"name": "random_retrieval", "golden.random_retrieval": True},
      # Proxy resolution (32×32 images): 8×8 (f=4), 16×16 (default, f=2), 32×32 (no pooling),
      # and the repeat proxy (ranking identical to the full-resolution one).
      {"name": "proxy_8", "golden.low_res_dim": 8},
      {"name": "proxy_32", "golden.low_res_dim": 32},
      {"name": "proxy_repeat_4", "golden.proxy_repeat_factor": 4},
      # Budgets.
      {"name": "k_half", "golden.k_min": 50, "golden.k_max": 100},
      {"name": "k_double", "golden.k_min": 200, "golden.k_max": 400},
      {"name": "k_full", "golden.k_min": 2000, "golden.k_max": 2000},
  ]
  if arg == "quick":
    keep = {"pca_locality", "golddiff", "static_m_k", "random_retrieval", "proxy_8", "k_half"}
    runs = [r for r in runs if r["name"] in keep]
  return runs
