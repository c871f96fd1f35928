"""PCA-locality masks (docs/method.md §3, §4.1 steps 1–5, §13 Q-1/Q-3) against a float64 NumPy
reference."""

import numpy as np
import pytest

import golddiff_jax as gd
import reference as ref
from golddiff_jax import masks
from golddiff_jax.data import procedural_images

SHAPES = [(200, 8, 8, 1), (150, 6, 5, 3), (120, 5, 7, 1)]  # (N, H, W, C)
CONST = (0, 0, 0)  # a pixel held constant across the dataset: zero variance → Q-1
MAX_FLIP_FRACTION = 0.005  # float32 (package) vs float64 (reference) near τ, docs/method.md §13 Q-3
FLIP_REL_BAND = 1e-4


def _data(shape, seed=1):
  n, h, w, c = shape
  images = procedural_images(n, h, w, c, seed=seed)
  images[:, CONST[0], CONST[1], CONST[2]] = 0.3
  return images


_CACHE = {}


def _fit(shape):
  if shape not in _CACHE:
    images = _data(shape)
    _CACHE[shape] = (images, gd.fit(images), ref.covariance(ref.flatten(images)))
  return _CACHE[shape]


def _const_index(shape):
  _, h, w, c = shape
  return (CONST[0] * w + CONST[1]) * c + CONST[2]


def test_shrink_factors_and_operator():
  images, stats, cov = _fit(SHAPES[1])
  for t in (900, 300, 0):
    abar = ref.ABAR[t]
    lam = np.asarray(stats.eigvals, np.float64)
    np.testing.assert_allclose(np.asarray(masks.shrink_factors(stats.eigvals, abar)),
                               abar * lam / ((1 - abar) + abar * lam), rtol=1e-5, atol=1e-12)
    op = np.asarray(masks.wiener_operator(stats.eigvals, stats.eigvecs, abar))
    want = ref.wiener_operator(cov, abar)
    # Also equal to ᾱS(ᾱS + σ²I)^{-1}, computed without any eigendecomposition.
    solved = np.linalg.solve((abar * cov + (1 - abar) * np.eye(len(cov))).T, (abar * cov).T).T
    np.testing.assert_allclose(want, solved, atol=1e-10)
    np.testing.assert_allclose(op, want, rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [900, 500, 100, 0])
@pytest.mark.parametrize("theta", [0.02, 0.05, 0.2])
def test_locality_mask_matches_reference(shape, t, theta):
  _, stats, cov = _fit(shape)
  abar = ref.ABAR[t]
  got = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, abar, theta))
  want, m_tilde, tau = ref.mask(cov, abar, theta)
  assert got.shape == want.shape == (stats.dim, stats.dim)
  assert set(np.unique(got)) <= {0.0, 1.0}
  flips = got != want
  assert flips.mean() <= MAX_FLIP_FRACTION, flips.mean()
  near = np.abs(np.abs(m_tilde) - tau) <= FLIP_REL_BAND * tau
  assert np.all(near[flips]), "a mask entry flipped away from the threshold"
  # M̃[n,n] = 1, so the diagonal survives whenever τ = θ·max|M̃| ≤ 1.
  if np.abs(m_tilde).max() * theta <= 1.0:
    assert np.all(np.diag(got) == 1.0)
  # the zero-variance coordinate's row is e_n (its diagonal was forced to 1 in L̃).
  k = _const_index(shape)
  expect_row = np.zeros(stats.dim)
  expect_row[k] = 1.0
  np.testing.assert_array_equal(got[k], expect_row)
  np.testing.assert_array_equal(got[:, k], expect_row)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [900, 100])
def test_real_valued_mask_matches_reference(shape, t):
  _, stats, cov = _fit(shape)
  abar = ref.ABAR[t]
  op = masks.wiener_operator(stats.eigvals, stats.eigvecs, abar)
  got = np.asarray(masks.mask_from_operator(op, 0.05, binary=False))
  _, m_tilde, _ = ref.mask(cov, abar, 0.05)
  np.testing.assert_allclose(got, m_tilde, rtol=0, atol=1e-4 * np.abs(m_tilde).max())
  k = _const_index(shape)
  assert got[k, k] == 1.0
  # Row normalisation: unit diagonal everywhere, and rows (not columns) are divided by L̃[n,n].
  np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-5)
  op64 = ref.wiener_operator(cov, abar)
  col_normalised = op64 / np.where(np.abs(np.diag(op64)) < 1e-6, 1, np.diag(op64))[None, :]
  assert np.abs(col_normalised - got).max() > 1e-2 * np.abs(m_tilde).max()
  # M̃ is not symmetric, and |M̃| can exceed 1.
  assert np.abs(got - got.T).max() > 1e-2


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_not_symmetric(shape):
  _, stats, cov = _fit(shape)
  for t in (500, 100):
    got = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], 0.05))
    want = ref.mask(cov, ref.ABAR[t], 0.05)[0]
    assert np.sum(want != want.T) > 0
    assert np.sum(got != got.T) > 0


def test_threshold_uses_greater_equal():
  # A hand-made operator whose normalised entries hit τ exactly (powers of two: exact in float32).
  op = np.array([[1.0, 0.5, 0.25],
                 [0.125, 1.0, 0.0],
                 [0.5, 0.25, 0.5]], np.float32)
  got = np.asarray(masks.mask_from_operator(op, 0.25))
  m_tilde = op / np.diag(op)[:, None]  # max |M̃| = 1 (row 2: [1, 0.5, 1]) → τ = 0.25
  np.testing.assert_array_equal(got, (np.abs(m_tilde) >= 0.25).astype(np.float32))
  assert got[0, 2] == 1.0 and got[1, 0] == 0.0


def test_q1_with_tiny_diagonal():
  op = np.array([[1e-8, 0.3, 0.0],
                 [0.2, 0.5, 0.1],
                 [0.0, 0.05, 0.4]], np.float32)
  got = np.asarray(masks.mask_from_operator(op, 0.1, binary=False))
  want = op.astype(np.float64).copy()
  want[0, 0] = 1.0
  want /= np.diag(want)[:, None]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[0, 0] == 1.0 and abs(got[0, 1] - 0.3) < 1e-7


def _check_sparse(mask):
  idx, valid = masks.sparse_form(mask)
  d = mask.shape[0]
  counts = (mask != 0).sum(axis=0)
  assert idx.shape == valid.shape == (d, max(int(counts.max()), 1))
  np.testing.assert_array_equal(valid.sum(axis=1), counts)
  for m in range(d):
    rows = idx[m][valid[m]]
    np.testing.assert_array_equal(rows, np.flatnonzero(mask[:, m]))  # sorted, column m's inputs
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(valid[m], np.arange(idx.shape[1]) < counts[m])  # valid first
    assert np.all(idx[m][~valid[m]] == 0)
  back = masks.dense_from_sparse(idx, valid)
  np.testing.assert_array_equal(back, (mask != 0).astype(np.float32))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [900, 100, 0])
def test_sparse_round_trip_real_masks(shape, t):
  _, stats, _ = _fit(shape)
  _check_sparse(np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], 0.05)))


@pytest.mark.parametrize("d,density", [(7, 0.3), (30, 0.05), (45, 0.9), (5, 0.0)])
def test_sparse_round_trip_random(d, density):
  rng = np.random.default_rng(d)
  mask = (rng.uniform(size=(d, d)) < density).astype(np.float32)
  _check_sparse(mask)


def _check_tiled(mask, image_shape, tile):
  """The tiled form lists, for every group of outputs, exactly the union of their inputs."""
  form = masks.tiled_form(mask, image_shape, tile)
  h, w, c = image_shape
  d = h * w * c
  groups = masks.tile_groups(image_shape, tile)
  assert form.sub.shape[0] == groups.shape[0] == c * -(-h // tile) * -(-w // tile)
  assert form.sub.shape[2] == tile * tile
  # Every coordinate is in exactly one group; `order` and `position` are inverse permutations.
  real = form.order[form.order < d]
  np.testing.assert_array_equal(np.sort(real), np.arange(d))
  np.testing.assert_array_equal(form.order[form.position], np.arange(d))
  coords = np.arange(d).reshape(h, w, c)
  for g, outputs in enumerate(groups):
    outputs = outputs[outputs < d]
    channels = {int(np.argwhere(coords == m)[0][2]) for m in outputs}
    assert len(channels) == 1  # one channel per group
    union = np.flatnonzero((mask[:, outputs] != 0).any(axis=1))
    listed = form.index[g][form.index[g] < form.order.size]
    np.testing.assert_array_equal(np.sort(form.order[listed]), union)
  np.testing.assert_array_equal(masks.dense_from_tiled(form), (mask != 0).astype(np.float32))
  width = max(int(max(((mask[:, o[o < d]] != 0).any(axis=1)).sum() for o in groups)), 1)
  assert form.cost_ratio == pytest.approx(groups.shape[0] * width * tile * tile / d**2)


@pytest.mark.parametrize("image_shape,tile", [((6, 5, 3), 2), ((5, 7, 1), 3), ((4, 4, 2), 4),
                                              ((3, 3, 1), 8), ((6, 6, 2), 1)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4, 1.0])
def test_tiled_round_trip_random(image_shape, tile, density):
  d = int(np.prod(image_shape))
  rng = np.random.default_rng(d + tile)
  _check_tiled((rng.uniform(size=(d, d)) < density).astype(np.float32), image_shape, tile)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [900, 100, 0])
def test_tiled_round_trip_real_masks(shape, t):
  _, stats, _ = _fit(shape)
  mask = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], 0.05))
  _check_tiled(mask, stats.image_shape, 2)


def test_tiled_form_errors():
  with pytest.raises(ValueError, match="image_shape"):
    masks.tiled_form(np.eye(12), (2, 2, 2), 2)
  with pytest.raises(ValueError, match="tile"):
    masks.tiled_form(np.eye(8), (2, 2, 2), 0)


VARIANTS = [dict(eig_floor=1e-3), dict(eig_floor=5e-6, diag_floor=0.05),
            dict(diag_floor=0.1), dict(threshold_scope="output"),
            dict(eig_floor=1e-4, threshold_scope="output")]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", [700, 200, 0])
def test_mask_variants_match_float64_reference(variant, t):
  shape = SHAPES[1]
  _, stats, cov = _fit(shape)
  abar, theta = ref.ABAR[t], float(np.random.default_rng().uniform(0.01, 0.1))
  got = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, abar, theta, **variant))
  want, m_tilde, tau = ref.mask_variant(cov, abar, theta,
                                        scope=variant.get("threshold_scope", "global"),
                                        eig_floor=variant.get("eig_floor", 0.0),
                                        diag_floor=variant.get("diag_floor", 0.0))
  flips = got != want
  assert flips.mean() <= MAX_FLIP_FRACTION, flips.mean()
  tau = np.broadcast_to(tau, m_tilde.shape)
  near = np.abs(np.abs(m_tilde) - tau) <= 2e-3 * tau
  assert np.all(near[flips]), "a mask entry flipped away from the threshold"
  assert np.all(np.diag(got) == 1.0)


def test_published_options_reproduce_the_published_mask_exactly():
  _, stats, _ = _fit(SHAPES[0])
  for t in (500, 0):
    plain = masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], 0.05)
    spelled = masks.mask_for(stats, ref.ABAR[t], {"mask_threshold": 0.05, **masks.PUBLISHED})
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(spelled))


def test_mask_variant_options_are_checked():
  for bad, msg in [({"eig_floor": -1.0}, "eig_floor"), ({"diag_floor": 1.5}, "diag_floor"),
                   ({"eig_floor": float("nan")}, "eig_floor"), ({"diag_floor": True}, "diag_floor"),
                   ({"threshold_scope": "row"}, "threshold_scope")]:
    with pytest.raises(ValueError, match=msg):
      masks.check_mask_options(bad)
  masks.check_mask_options(masks.PUBLISHED)


def _real_digits(n=1000):
  from golddiff_jax.data import load_mnist5k  # pylint: disable=g-import-not-at-top
  return load_mnist5k()[0][:n]


def test_constant_border_keeps_local_neighbourhoods():
  """On real digits (a constant border, rarely-inked pixels) the published rule keeps about one
  input per output at t = 200; every variant keeps the neighbourhood of interior outputs."""
  images = _real_digits()
  stats = gd.fit(images)
  flat_var = images.reshape(len(images), -1).var(axis=0)
  assert (flat_var == 0).sum() > 50  # the data really has degenerate pixels
  interior = np.zeros((28, 28), bool)
  interior[6:22, 6:22] = True
  interior = interior.reshape(-1)
  centres = np.flatnonzero(interior)
  abar = ref.ABAR[200]
  published = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, abar, 0.02))
  assert published[:, interior].sum(axis=0).mean() < 25
  for variant in (dict(diag_floor=0.01), dict(eig_floor=1e-3), dict(threshold_scope="output")):
    got = np.asarray(masks.locality_mask(stats.eigvals, stats.eigvecs, abar, 0.02, **variant))
    for step in (1, -1, 28, -28):  # each interior output keeps its 4-neighbours
      assert got[centres + step, centres].mean() > 0.95, (variant, step)
    assert got[:, interior].sum(axis=0).mean() > 2 * published[:, interior].sum(axis=0).mean()


def test_default_floor_leaves_data_without_degenerate_pixels_unchanged():
  """The default variant (configs.common: diag_floor 0.01) gives exactly the published mask on
  data whose pixels all vary (here procedural colour fields), at every step of a 10-step run."""
  images = procedural_images(300, 8, 8, 3, seed=int(np.random.default_rng().integers(1000)))
  stats = gd.fit(images)
  for t in range(900, -1, -100):
    published = masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], 0.05)
    floored = masks.locality_mask(stats.eigvals, stats.eigvecs, ref.ABAR[t], 0.05, diag_floor=0.01)
    np.testing.assert_array_equal(np.asarray(floored), np.asarray(published))
