"""What a run writes: atomic files (temp file + ``os.replace``), PNG image grids, JSON metrics.

An interrupted run never leaves a half-written result: every file appears whole or not at all.
Images are shown as clamp((x + 1)/2, 0, 1); 2-D point sets (1×1×2 "images") are drawn as scatter
plots instead of grids. The run's pictures (`sample_grid`, `trajectory_grid`) are zoomed with
nearest-neighbour pixels so that each image is at least ``MIN_CELL`` pixels and the grid at least
``MIN_WIDTH`` pixels wide, with thin grey separators; labelled figures are in `golddiff_jax.plots`.
"""

from __future__ import annotations

import io
import json
import math
import resource
from typing import Any

import numpy as np
from PIL import Image

from golddiff_jax.atomic import atomic_write  # noqa: F401 - re-exported for experiments

MIN_CELL = 64        # pixels: the smallest side of one image in a readable grid
MIN_WIDTH = 512      # pixels: the smallest width of a readable grid
SEPARATOR = 128      # grey level of the separators in a readable grid


def jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return jsonable(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` (dicts, lists, NumPy values) as indented JSON, atomically."""
  text = json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n"
  atomic_write(path, lambda f: f.write(text), mode="w")


def write_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes ``arrays`` to an .npz file, atomically."""
  atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Model-space images in [−1, 1] → uint8: round((x + 1)·127.5) in float32, half to even
  (NumPy's ``round``), clipped to [0, 255] — the same as round(clamp((x + 1)/2, 0, 1)·255), and
  the exact inverse of the data map (v/255 − 0.5)/0.5 for every uint8 v. The one conversion for
  pictures and for the built-in datasets' PNGs."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255
                 ).astype(np.uint8)


def readable_zoom(height: int, width: int, columns: int, pad: int = 2) -> int:
  """The smallest integer zoom that makes an image's shorter side ≥ ``MIN_CELL`` pixels and a
  grid of ``columns`` such images (``pad`` pixels apart) ≥ ``MIN_WIDTH`` pixels wide."""
  if min(height, width, columns) < 1 or pad < 0:
    raise ValueError(f"need positive image sides and columns and pad >= 0, got "
                     f"{(height, width, columns, pad)}")
  cell = -(-MIN_CELL // min(height, width))
  wide = -(-(MIN_WIDTH - (columns + 1) * pad) // (columns * width))
  return max(1, cell, wide)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1, *, zoom: int = 1,
               fill: int = 255) -> np.ndarray:
  """Tiles [N, H, W, C] model-space images into one uint8 image (C = 1: grey, else RGB).

  Each image is enlarged ``zoom`` times with nearest-neighbour pixels; images are ``pad`` pixels
  apart (and from the border), on a background of grey level ``fill``.
  """
  if zoom < 1 or pad < 0:
    raise ValueError(f"zoom must be >= 1 and pad >= 0, got zoom={zoom}, pad={pad}")
  images = to_uint8(images)
  if zoom > 1:
    images = np.repeat(np.repeat(images, zoom, axis=1), zoom, axis=2)
  n, h, w, c = images.shape
  if c not in (1, 3):
    images = np.repeat(images[..., :1], 3, axis=-1) if c < 3 else images[..., :3]
    c = 3
  columns = columns or max(1, math.ceil(math.sqrt(n)))
  rows = max(1, math.ceil(n / columns))
  grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), fill, np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
  return grid[..., 0] if c == 1 else grid


def readable_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
  """`image_grid` zoomed by `readable_zoom`, with 2-pixel grey separators."""
  n, h, w = np.shape(images)[:3]
  columns = columns or max(1, math.ceil(math.sqrt(n)))
  return image_grid(images, columns, pad=2, zoom=readable_zoom(h, w, min(columns, n), 2),
                    fill=SEPARATOR)


def scatter_plot(points: np.ndarray, data_points: np.ndarray | None = None,
                 size: int = 256) -> np.ndarray:
  """Draws 2-D points in [−1, 1]² (red) over optional training points (grey) as uint8 RGB."""
  canvas = np.full((size, size, 3), 255, np.uint8)

  def draw(pts, colour):
    pts = np.asarray(pts, np.float32).reshape(-1, np.asarray(pts).shape[-1])[:, :2]
    pix = np.clip(np.round((pts + 1.0) / 2.0 * (size - 1)), 1, size - 2).astype(int)
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        canvas[size - 1 - (pix[:, 1] + dy), pix[:, 0] + dx] = colour

  if data_points is not None:
    draw(data_points, (170, 170, 170))
  draw(points, (220, 30, 30))
  return canvas


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W] or [H, W, 3] array as a PNG, atomically."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
  atomic_write(path, lambda f: f.write(buffer.getvalue()))


def sample_grid(images: np.ndarray, data_points: np.ndarray | None = None) -> np.ndarray:
  """The picture of a set of samples: a readable grid, or for 2-D point data a scatter plot (over
  the training ``data_points``, if given)."""
  if images.shape[1:3] == (1, 1):
    return scatter_plot(images, data_points)
  return readable_grid(images)


def trajectory_grid(trajectory: np.ndarray, num_samples: int,
                    data_points: np.ndarray | None = None) -> np.ndarray:
  """x̂_0 per step [S, B, H, W, C] → one row per sample (the first ``num_samples``), one column
  per step, as a readable grid (`golddiff_jax.plots.trajectory_figure` labels the columns).

  Point data: one scatter plot per step (over the training ``data_points``, if given), side by
  side.
  """
  steps = trajectory.shape[0]
  if trajectory.shape[2:4] == (1, 1):
    gap = np.full((128, 2, 3), SEPARATOR, np.uint8)
    panels = [scatter_plot(trajectory[s], data_points, size=128) for s in range(steps)]
    return np.concatenate([p for s, panel in enumerate(panels)
                           for p in ([gap, panel] if s else [panel])], axis=1)
  picked = trajectory[:, :num_samples]                       # [S, b, H, W, C]
  ordered = np.swapaxes(picked, 0, 1).reshape(-1, *picked.shape[2:])  # sample-major
  return readable_grid(ordered, columns=steps)


def peak_memory() -> dict:
  """Peak memory of this process: the devices' ``peak_bytes_in_use`` if they report it (GPU,
  TPU), else the process's peak resident set size (CPU). ``source`` says which."""
  import jax  # pylint: disable=g-import-not-at-top
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats raise or return None.
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  if peaks:
    return {"bytes": max(peaks), "per_device_bytes": peaks,
            "source": "device.memory_stats()['peak_bytes_in_use'] (max over local devices)"}
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB.
  return {"bytes": int(rss), "source": "process peak RSS (getrusage ru_maxrss; includes host data)"}
