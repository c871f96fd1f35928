"""Readable grids (outputs.py), labelled figures and the run's plots (plots.py)."""

import io
import os
import sys

import numpy as np
from PIL import Image
import pytest

from golddiff_jax import outputs, plots, run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import default  # noqa: E402  pylint: disable=g-import-not-at-top


def _uint8_reference(images):
  return np.round(np.clip((images.astype(np.float64) + 1) / 2, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(4))
def test_readable_zoom_is_the_smallest_that_meets_both_minimums(seed):
  rng = np.random.default_rng(seed)
  for _ in range(25):
    h, w = (int(v) for v in rng.integers(1, 300, 2))
    columns, pad = int(rng.integers(1, 12)), int(rng.integers(0, 4))
    zoom = outputs.readable_zoom(h, w, columns, pad)
    ok = lambda z: (min(h, w) * z >= outputs.MIN_CELL  # noqa: E731
                    and columns * (w * z + pad) + pad >= outputs.MIN_WIDTH)
    assert ok(zoom) and (zoom == 1 or not ok(zoom - 1)), (h, w, columns, pad, zoom)
  with pytest.raises(ValueError, match="positive"):
    outputs.readable_zoom(0, 8, 2)


@pytest.mark.parametrize("channels", [1, 3])
def test_zoomed_grid_matches_numpy(channels):
  rng = np.random.default_rng(channels)
  images = rng.uniform(-1.3, 1.3, (5, 6, 7, channels)).astype(np.float32)
  zoom, pad, fill, columns = 3, 2, 77, 2
  grid = outputs.image_grid(images, columns, pad, zoom=zoom, fill=fill)
  want = np.full((3 * (18 + pad) + pad, 2 * (21 + pad) + pad, channels), fill, np.uint8)
  for i, image in enumerate(_uint8_reference(images)):
    r, c = divmod(i, columns)
    y, x = pad + r * (18 + pad), pad + c * (21 + pad)
    want[y:y + 18, x:x + 21] = np.kron(image, np.ones((zoom, zoom, 1), np.uint8))
  np.testing.assert_array_equal(grid, want[..., 0] if channels == 1 else want)
  with pytest.raises(ValueError, match="zoom"):
    outputs.image_grid(images, zoom=0)


def test_point_trajectory_draws_the_training_points():
  traj = np.zeros((3, 4, 1, 1, 2), np.float32)
  data_points = np.full((5, 1, 1, 2), 0.5, np.float32)
  plain, over = outputs.trajectory_grid(traj, 2), outputs.trajectory_grid(traj, 2, data_points)
  assert plain.shape == over.shape == (128, 3 * 128 + 2 * 2, 3)
  grey = np.all(over == 170, axis=-1)
  assert grey.sum() == 3 * 9 and not np.all(plain == 170, axis=-1).any()  # 3×3 dots, 3 panels


def test_sample_and_trajectory_grids_are_readable():
  rng = np.random.default_rng(0)
  grid = outputs.sample_grid(rng.uniform(-1, 1, (16, 28, 28, 1)))
  assert grid.shape[1] >= outputs.MIN_WIDTH and (grid.shape[1] - 2) // 4 - 2 >= 64
  traj = outputs.trajectory_grid(rng.uniform(-1, 1, (10, 8, 32, 32, 3)), 3)
  assert traj.shape == (3 * (64 + 2) + 2, 10 * (64 + 2) + 2, 3)


def _png(fig):
  data = plots.png_bytes(fig)
  image = Image.open(io.BytesIO(data))
  image.verify()
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("channels", [1, 3])
def test_labelled_grid_draws_the_grid_pixel_for_pixel(channels):
  rng = np.random.default_rng(channels)
  grid = rng.integers(0, 256, (40, 60, channels), dtype=np.uint8)
  grid = grid[..., 0] if channels == 1 else grid
  png = _png(plots.labelled_grid(grid, columns=3, rows=2, column_labels=["a", "bb", "t=900"],
                                 row_labels=["optimal", "golddiff"], title="title"))
  rgb = np.repeat(grid[..., None], 3, -1) if channels == 1 else grid
  # The grid sits 4 pixels above the bottom edge; find its left edge, then compare exactly.
  body = png[-44:-4]
  left = [x for x in range(png.shape[1] - 59) if np.array_equal(body[:, x:x + 60], rgb)]
  assert len(left) == 1
  assert (png[:-44] < 128).any() and (png[-44:-4, :left[0]] < 128).any()  # labels drawn
  with pytest.raises(ValueError, match="column labels"):
    plots.labelled_grid(grid, columns=2, column_labels=["a"])
  with pytest.raises(ValueError, match="uint8"):
    plots.labelled_grid(grid.astype(np.float32))


@pytest.mark.parametrize("shape", [(4, 3, 8, 8, 1), (4, 50, 1, 1, 2)])
def test_trajectory_figure_images_and_points(shape):
  traj = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  png = _png(plots.trajectory_figure(traj, [600, 400, 200, 0], 2))
  assert png.shape[1] >= outputs.MIN_WIDTH
  with pytest.raises(ValueError, match="timesteps"):
    plots.trajectory_figure(traj, [600, 0], 2)


def _check_pngs(workdir, names):
  for name in names:
    with Image.open(os.path.join(workdir, name)) as image:
      image.verify()
    with Image.open(os.path.join(workdir, name)) as image:
      assert 300 <= image.size[0] <= 2000 and 200 <= image.size[1] <= 2000, (name, image.size)
      assert image.getextrema() != ((255, 255),) * len(image.getbands())  # not blank
  assert not [n for n in os.listdir(workdir) if n.startswith(".")]  # no temp files


def test_write_run_plots_from_metrics(tmp_path):
  ts = [900, 600, 300, 0]
  metrics = {"timesteps": ts, "num_images": 500, "step_seconds": [[0.2, 0.3, 0.25, 0.1]] * 2,
             "compile_seconds": [[1.0, 0.5, 0.5, 0.5], [0] * 4], "prepare_seconds": [0.1, 0.1],
             "golden_budgets": [{"t": t, "m": m, "k": k} for t, m, k in
                                zip(ts, [50, 120, 300, 500], [50, 40, 30, 25])],
             "posterior_support": {"timesteps": ts, "num_samples": 2, "mass": 0.99,
                                   "effective_size_mean": [400.0, 60.0, 5.0, 1.0],
                                   "support_mean": [480.0, 150.0, 12.0, 1.0]}}
  names = plots.write_run_plots(str(tmp_path), metrics)
  assert names == ["budgets.png", "concentration.png", "step_seconds.png"]
  _check_pngs(str(tmp_path), names)
  metrics.update(golden_budgets=None, posterior_support=None)
  assert plots.write_run_plots(str(tmp_path / "other"), metrics) == ["step_seconds.png"]


def test_budgets_figure_shades_the_expansion_steps():
  ts, m, k = [900, 600, 300, 0], [50, 120, 300, 500], [50, 40, 30, 25]
  fig = plots.budgets_figure(ts, m, k, num_images=500, expansion=[True, False, False, False])
  spans = [p for p in fig.axes[0].patches]
  assert len(spans) == 1
  x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
  assert x0 < 900 < x1 and not x0 < 600 < x1
  assert not plots.budgets_figure(ts, m, k, num_images=500).axes[0].patches


def test_golddiff_run_writes_its_plots(tmp_path):
  config = default.get_config()
  changes = {"dataset": "procedural", "num_images": 48, "resolution": 8,
             "data_dir": str(tmp_path / "tfds")}
  for field, value in changes.items():
    config.data[field] = value
  config.golden.update(low_res_dim=4, k_min=None, k_max=None)
  config.sampler.update(num_samples=2, batch_size=2, num_steps=2)
  config.diagnostics.num_samples = 2
  config.mesh.data = 1  # one device: the sharded run is tested elsewhere; this saves compiles
  config.method = "golddiff"
  workdir = str(tmp_path / "wd")
  run_lib.run(config, workdir)
  _check_pngs(workdir, ["grid.png", "trajectory.png", "concentration.png", "budgets.png",
                        "step_seconds.png"])
  with Image.open(os.path.join(workdir, "grid.png")) as grid:
    assert grid.size[0] >= outputs.MIN_WIDTH
