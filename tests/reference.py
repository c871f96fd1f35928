"""Float64 NumPy reference implementations written from docs/method.md, for the tests.

Nothing here imports golddiff_jax: every function is an independent transcription of a formula in
docs/method.md. Arrays are flattened per image in (H, W, C) order, rows are samples / database
images.
"""

from __future__ import annotations

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000

# docs/method.md §2.2 table: t -> (ᾱ_t, σ_t, φ_t, a_t), as printed
# (strings keep the printed precision).
SPEC_TABLE = {
    900: ("2.7024e-4", "0.999865", "0.000135", "0.01644"),
    800: ("1.5075e-3", "0.999246", "0.000754", "0.03883"),
    700: ("6.8683e-3", "0.996560", "0.003440", "0.08288"),
    600: ("2.5567e-2", "0.987133", "0.012867", "0.15990"),
    500: ("7.7797e-2", "0.960314", "0.039686", "0.27892"),
    400: ("0.193572", "0.898013", "0.101987", "0.43997"),
    300: ("0.394011", "0.778453", "0.221547", "0.62770"),
    200: ("0.656347", "0.586219", "0.413781", "0.81015"),
    100: ("0.895141", "0.323819", "0.676181", "0.94612"),
    0: ("0.999900", "0.010001", "0.989999", "0.99995"),
}


def printed_half_ulp(text: str) -> float:
  """Half a unit in the last printed digit of a decimal string such as '2.7024e-4' or '0.99995'."""
  mantissa, _, exponent = text.lower().partition("e")
  decimals = len(mantissa.partition(".")[2])
  return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


# ----------------------------------------------------------------------------------------------
# docs/method.md §2 schedule and DDIM
# ----------------------------------------------------------------------------------------------

def alphas_cumprod_f32() -> np.ndarray:
  """docs/method.md §2.1 as specified: float32 linear β, float32 cumulative product of α = 1 − β
  (returned as f64)."""
  beta = np.linspace(1e-4, 0.02, NUM_TRAIN_TIMESTEPS, dtype=np.float32)
  return np.cumprod(np.float32(1.0) - beta, dtype=np.float32).astype(np.float64)


def alphas_cumprod_f64() -> np.ndarray:
  """The same schedule evaluated in exact-ish float64 arithmetic."""
  beta = np.linspace(1e-4, 0.02, NUM_TRAIN_TIMESTEPS, dtype=np.float64)
  return np.cumprod(1.0 - beta)


ABAR = alphas_cumprod_f32()


def leading_timesteps(num_steps: int) -> np.ndarray:
  """docs/method.md §2.2: t_j = (S − 1 − j)·⌊1000/S⌋."""
  ratio = NUM_TRAIN_TIMESTEPS // num_steps
  return np.array([(num_steps - 1 - j) * ratio for j in range(num_steps)], np.int64)


def abar_prev(t: int, num_steps: int) -> float:
  prev = t - NUM_TRAIN_TIMESTEPS // num_steps
  return float(ABAR[prev]) if prev >= 0 else 1.0


def ddim_step(x_t, x0_hat, abar_t, abar_p):
  """docs/method.md §2.4 in float64: ε̂ from the unclipped x̂_0, clip only in the position term."""
  x_t = np.asarray(x_t, np.float64)
  x0_hat = np.asarray(x0_hat, np.float64)
  eps_hat = (x_t - np.sqrt(abar_t) * x0_hat) / np.sqrt(1.0 - abar_t)
  return np.sqrt(abar_p) * np.clip(x0_hat, -1.0, 1.0) + np.sqrt(1.0 - abar_p) * eps_hat


# ----------------------------------------------------------------------------------------------
# docs/method.md §3 statistics and docs/method.md §4 masks
# ----------------------------------------------------------------------------------------------

def flatten(images) -> np.ndarray:
  images = np.asarray(images, np.float64)
  return images.reshape(images.shape[0], -1)


def covariance(flat) -> np.ndarray:
  return np.cov(np.asarray(flat, np.float64), rowvar=False, ddof=1)


def wiener_operator(cov, abar) -> np.ndarray:
  """L̃ = V diag(s) Vᵀ with s = ᾱλ/(σ² + ᾱλ), λ clipped at 0 (float64 eigh)."""
  lam, vec = np.linalg.eigh(np.asarray(cov, np.float64))
  lam = np.clip(lam, 0.0, None)
  s = abar * lam / ((1.0 - abar) + abar * lam)
  return (vec * s) @ vec.T


def mask(cov, abar, theta):
  """docs/method.md §4.1 steps 1–4. Returns (binary mask M, real-valued M̃, τ)."""
  op = wiener_operator(cov, abar).copy()
  g = np.diag(op).copy()
  small = np.abs(g) < 1e-6
  g[small] = 1.0
  idx = np.flatnonzero(small)
  op[idx, idx] = 1.0
  m_tilde = op / g[:, None]  # row n divided by its own diagonal
  tau = theta * np.max(np.abs(m_tilde))
  return (np.abs(m_tilde) >= tau).astype(np.float64), m_tilde, tau


def mask_variant(cov, abar, theta, *, eig_floor=0.0, diag_floor=0.0, scope="global"):
  """The mask with the variant knobs (golddiff_jax.masks): λ ← max(λ, eig_floor); rows divided by
  max(|g_n|, diag_floor·max|g|) (own entry kept at 1); θ relative to the global or the per-column
  max. Returns (binary M, M̃, τ broadcastable to M̃)."""
  lam, vec = np.linalg.eigh(np.asarray(cov, np.float64))
  lam = np.maximum(np.clip(lam, 0.0, None), eig_floor)
  op = (vec * (abar * lam / ((1.0 - abar) + abar * lam))) @ vec.T
  g = np.diag(op).copy()
  floor = diag_floor * np.abs(g).max()
  small = np.abs(g) < 1e-6
  g[small] = 1.0
  idx = np.flatnonzero(small)
  op[idx, idx] = 1.0
  g = np.where(np.abs(g) < floor, floor, g)
  m_tilde = op / g[:, None]
  np.fill_diagonal(m_tilde, 1.0)
  mag = np.abs(m_tilde)
  tau = theta * (mag.max(axis=0, keepdims=True) if scope == "output" else mag.max())
  return (mag >= tau).astype(np.float64), m_tilde, tau


# ----------------------------------------------------------------------------------------------
# docs/method.md §5 softmax and denoisers
# ----------------------------------------------------------------------------------------------

def softmax_mean(logits, values) -> np.ndarray:
  """Σ_i softmax_i(logits[b, i, k]) · values[i, m]; logits [B, N, K] (K = 1 or D), values [N, D]."""
  logits = np.asarray(logits, np.float64)
  values = np.asarray(values, np.float64)
  mx = np.max(logits, axis=1, keepdims=True)
  mx = np.where(np.isfinite(mx), mx, 0.0)
  p = np.exp(logits - mx)
  w = p / np.sum(p, axis=1, keepdims=True)
  if w.shape[-1] == 1:
    return w[..., 0] @ values
  return np.einsum("bim,im->bm", w, values)


def wssm_mean(logits, values, chunk: int) -> np.ndarray:
  """docs/method.md §5.4 WSSM: per-chunk local softmaxes over contiguous chunks of `chunk`
  candidates (the last one may be partial), x̂ = Σ_c Σ_{i∈c} w^{(c)}_i x_i /
  (Σ_c Σ_{i∈c} w^{(c)}_i + 1e−8)."""
  logits = np.asarray(logits, np.float64)
  values = np.asarray(values, np.float64)
  n = logits.shape[1]
  num = np.zeros((logits.shape[0], values.shape[1]))
  den = np.zeros((logits.shape[0], logits.shape[2]))
  for start in range(0, n, chunk):
    lg = logits[:, start:start + chunk]
    p = np.exp(lg - lg.max(axis=1, keepdims=True))
    w = p / p.sum(axis=1, keepdims=True)
    vals = values[start:start + chunk]
    num += w[..., 0] @ vals if w.shape[-1] == 1 else np.einsum("bim,im->bm", w, vals)
    den += w.sum(axis=1)
  return num / (den + 1e-8)


def optimal_logits(database, x_t, abar, temperature=1.0) -> np.ndarray:
  """docs/method.md §5.1: −‖x_t − a x_i‖² / (2σ²T), [B, N, 1]."""
  db = np.asarray(database, np.float64)
  x_t = np.asarray(x_t, np.float64)
  diff = x_t[:, None, :] - np.sqrt(abar) * db[None]
  return (-np.sum(diff**2, axis=-1) / (2.0 * (1.0 - abar) * temperature))[..., None]


def optimal(database, x_t, abar, temperature=1.0) -> np.ndarray:
  return softmax_mean(optimal_logits(database, x_t, abar, temperature), database)


def wiener(database, x_t, abar) -> np.ndarray:
  """docs/method.md §5.2 as the Gaussian posterior mean μ + aΣ(a²Σ + σ²I)^{-1}(x_t − aμ)
  (np.cov + solve, no eigh)."""
  db = np.asarray(database, np.float64)
  x_t = np.asarray(x_t, np.float64)
  mu = db.mean(axis=0)
  cov = covariance(db)
  a = np.sqrt(abar)
  d = cov.shape[0]
  rhs = (x_t - a * mu).T  # [D, B]
  sol = np.linalg.solve(abar * cov + (1.0 - abar) * np.eye(d), rhs)
  return mu + (a * cov @ sol).T


def pca_logits(database, x_t, abar, mask_matrix, temperature=1.0) -> np.ndarray:
  """docs/method.md §5.3: logit[b,i,m] = −Σ_n (x_t[b,n] − a x_i[n])² M[n,m] / (2σ²T), [B, N, D]."""
  db = np.asarray(database, np.float64)
  x_t = np.asarray(x_t, np.float64)
  delta = (x_t[:, None, :] - np.sqrt(abar) * db[None]) ** 2
  dist = np.einsum("bin,nm->bim", delta, np.asarray(mask_matrix, np.float64))
  return -dist / (2.0 * (1.0 - abar) * temperature)


def pca_locality(database, x_t, abar, mask_matrix, temperature=1.0, wssm_chunk=None):
  logits = pca_logits(database, x_t, abar, mask_matrix, temperature)
  if wssm_chunk is None:
    return softmax_mean(logits, database)
  return wssm_mean(logits, database, wssm_chunk)


# ----------------------------------------------------------------------------------------------
# docs/method.md §2 full DDIM loop
# ----------------------------------------------------------------------------------------------

def ddim_sample(denoise_fn, latents, num_steps: int):
  """Runs η = 0 DDIM from `latents` [B, D]; denoise_fn(x_t, t, abar) -> x̂_0 [B, D].

  Returns (x0 trajectory [S, B, D], timesteps [S]).
  """
  x = np.asarray(latents, np.float64)
  traj = []
  ts = leading_timesteps(num_steps)
  for t in ts:
    abar_t = float(ABAR[t])
    x0 = denoise_fn(x, int(t), abar_t)
    traj.append(x0)
    x = ddim_step(x, x0, abar_t, abar_prev(int(t), num_steps))
  return np.stack(traj), ts
