"""Figures a run writes (matplotlib, no pyplot state): labelled image grids and line plots.

* `labelled_grid`: a uint8 image grid placed pixel for pixel (no resampling) with column and row
  labels; `trajectory_figure` labels the columns of `outputs.trajectory_grid` with their t.
* `plot_concentration` / `concentration_figure`: the posterior's effective support size against
  t — the paper's claim that the posterior concentrates on a few training images as t → 0,
  measured on the run's data.
* `budgets_figure`: GoldDiff's random-pool size m_t and golden-subset size k_t against t.
* `timing_figure`: seconds per sampling step (every batch), with compile and preparation totals.
* `write_run_plots(workdir, metrics)`: the last three from a run's metrics, each written atomically.

Every figure is a `matplotlib.figure.Figure` rendered by `png_bytes`; x axes run from the noisiest
step (large t) on the left to t = 0 on the right, the order in which the sampler visits them.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from golddiff_jax import outputs
from golddiff_jax.atomic import atomic_write

DPI = 100
_FONT_PX = 13  # height of a 9-point label at DPI 100, with a little room


def png_bytes(fig: Figure) -> bytes:
  """The figure as PNG bytes at its own size and ``DPI``."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=DPI)
  return buffer.getvalue()


def write_figure(path: str, fig: Figure) -> None:
  """Writes the figure as a PNG, atomically."""
  data = png_bytes(fig)
  atomic_write(path, lambda f: f.write(data))


def labelled_grid(grid: np.ndarray, *, columns: int = 1, rows: int = 1,
                  column_labels: Sequence[str] = (), row_labels: Sequence[str] = (),
                  title: str | None = None) -> Figure:
  """A uint8 grid ([H, W] grey or [H, W, 3]) drawn at one figure pixel per grid pixel, with a
  label above each of ``columns`` equal-width columns and left of each of ``rows`` rows."""
  grid = np.asarray(grid)
  if grid.dtype != np.uint8 or grid.ndim not in (2, 3):
    raise ValueError(f"grid must be a uint8 [H, W] or [H, W, 3] array, got {grid.dtype} "
                     f"{grid.shape}")
  column_labels, row_labels = list(column_labels), list(row_labels)
  if column_labels and len(column_labels) != columns:
    raise ValueError(f"{len(column_labels)} column labels for {columns} columns")
  if row_labels and len(row_labels) != rows:
    raise ValueError(f"{len(row_labels)} row labels for {rows} rows")
  if grid.ndim == 2:
    grid = np.repeat(grid[..., None], 3, axis=-1)  # exact grey levels (no colour map)
  height, width = grid.shape[:2]
  left = 8 + 7 * max((len(s) for s in row_labels), default=0) if row_labels else 4
  top = 4 + (_FONT_PX + 4 if column_labels else 0) + (_FONT_PX + 8 if title else 0)
  fig_w, fig_h = width + left + 4, height + top + 4
  fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI, facecolor="white")
  # figimage places the array unscaled: yo counts pixels from the bottom of the figure.
  fig.figimage(grid, xo=left, yo=4, origin="upper", resample=False)
  for c, label in enumerate(column_labels):
    fig.text((left + (c + 0.5) * width / columns) / fig_w, (4 + height + 3) / fig_h, label,
             ha="center", va="bottom", fontsize=9)
  for r, label in enumerate(row_labels):
    fig.text((left - 6) / fig_w, (4 + height - (r + 0.5) * height / rows) / fig_h, label,
             ha="right", va="center", fontsize=9)
  if title:
    fig.text(0.5, 1 - 4 / fig_h, title, ha="center", va="top", fontsize=10)
  return fig


def trajectory_figure(trajectory: np.ndarray, timesteps: Sequence[int], num_samples: int,
                      data_points: np.ndarray | None = None) -> Figure:
  """`outputs.trajectory_grid` (one row per sample, one column per step; point data over the
  training ``data_points``) with each column labelled by its timestep t."""
  steps = trajectory.shape[0]
  if len(timesteps) != steps:
    raise ValueError(f"{len(timesteps)} timesteps for a trajectory of {steps} steps")
  grid = outputs.trajectory_grid(trajectory, num_samples, data_points)
  points = trajectory.shape[2:4] == (1, 1)
  rows = 1 if points else min(num_samples, trajectory.shape[1])
  return labelled_grid(grid, columns=steps, rows=rows,
                       column_labels=[f"t={int(t)}" for t in timesteps],
                       title="predicted x̂0 at each sampling step" + (
                           "" if points else " (one row per sample)"))


def _time_axis(ax, timesteps) -> None:
  ax.set_xlabel("timestep t (sampling runs left to right)")
  ax.set_xlim(max(timesteps) + 20, min(timesteps) - 20)
  ax.grid(True, which="both", alpha=0.3)


def plot_concentration(ax, timesteps: Sequence[int], effective_size, support=None, *,
                       num_images: int, mass: float = 0.99, golden_k=None) -> None:
  """Draws the posterior's effective support size exp(entropy) over the N training images, and
  the number of images holding ``mass`` of it, against t (log scale) on ``ax``.

  ``effective_size`` / ``support`` are [S] (one curve) or [S, B] (the median over the B samples
  and a band from their 10th to 90th percentile). ``golden_k`` [S]: GoldDiff's k_t, drawn for
  comparison.
  """
  t = np.asarray(timesteps)
  marker = "o-" if len(t) <= 25 else "-"
  for values, label, colour in ((effective_size, "effective size exp(H)", "C0"),
                                (support, f"images holding {mass:.0%} of the mass", "C1")):
    if values is None:
      continue
    values = np.asarray(values, np.float64).reshape(len(t), -1)
    if values.shape[1] > 1:
      low, high = np.percentile(values, [10, 90], axis=1)
      ax.fill_between(t, low, high, color=colour, alpha=0.2, lw=0)
      label += f" (median, 10-90% of {values.shape[1]} samples)"
    ax.plot(t, np.median(values, axis=1), marker, color=colour, ms=4, label=label)
  if golden_k is not None:
    ax.plot(t, golden_k, "s--", color="C2", ms=4, label="GoldDiff golden subset k_t")
  ax.axhline(num_images, color="grey", ls=":", label=f"N = {num_images}")
  ax.set_yscale("log")
  ax.set_ylim(0.7, num_images * 1.6)
  ax.set_ylabel("training images")
  _time_axis(ax, t)
  ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def concentration_figure(timesteps: Sequence[int], effective_size, support=None, *,
                         num_images: int, mass: float = 0.99, golden_k=None,
                         what: str = "") -> Figure:
  """`plot_concentration` as a figure of its own, titled with ``what`` was measured."""
  fig = Figure(figsize=(6.4, 4.8), dpi=DPI)
  ax = fig.add_subplot()
  plot_concentration(ax, timesteps, effective_size, support, num_images=num_images, mass=mass,
                     golden_k=golden_k)
  ax.set_title("Posterior concentration" + (f"\n{what}" if what else ""), fontsize=10)
  fig.tight_layout()
  return fig


def budgets_figure(timesteps: Sequence[int], m: Sequence[int], k: Sequence[int], *,
                   num_images: int, expansion: Sequence[bool] | None = None) -> Figure:
  """GoldDiff's per-step random pool m_t and golden subset k_t against t; steps that used the
  high-noise expansion over all N images instead of retrieval (``expansion``) are shaded."""
  t = np.asarray(timesteps)
  fig = Figure(figsize=(6.4, 4.2), dpi=DPI)
  ax = fig.add_subplot()
  spacing = float(np.min(np.abs(np.diff(t)))) if len(t) > 1 else 1.0
  for i, step in enumerate(t[np.asarray(expansion, bool)] if expansion is not None else []):
    ax.axvspan(step - spacing / 2, step + spacing / 2, color="tab:orange", alpha=0.15, lw=0,
               label="expansion over all N (no retrieval)" if i == 0 else None)
  ax.plot(t, m, "o-", label="random pool m_t")
  ax.plot(t, k, "s-", label="golden subset k_t")
  ax.axhline(num_images, color="grey", ls=":", label=f"N = {num_images}")
  ax.set_yscale("log")
  plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
  ax.yaxis.set_major_formatter(plain)
  if np.log10(max(max(m), num_images) / min(k)) < 1.5:  # few decades: label the minor ticks too
    ax.yaxis.set_minor_formatter(plain)
  ax.set_ylabel("images")
  _time_axis(ax, t)
  ax.set_title("GoldDiff budgets per step", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def timing_figure(timesteps: Sequence[int], step_seconds, compile_seconds=None,
                  prepare_seconds=None) -> Figure:
  """Seconds per sampling step: one dot per batch, a bar at the median over batches.

  ``step_seconds`` / ``compile_seconds``: [S] or [batches, S]; ``prepare_seconds``: the run's
  plans (one number, once per run; a per-batch list is summed).
  """
  t = np.asarray(timesteps)
  seconds = np.asarray(step_seconds, np.float64).reshape(-1, len(t))
  x = np.arange(len(t))
  fig = Figure(figsize=(6.4, 4.2), dpi=DPI)
  ax = fig.add_subplot()
  ax.bar(x, np.median(seconds, axis=0), color="C0", alpha=0.5, label="median over batches")
  for b, row in enumerate(seconds):
    ax.plot(x, row, "k.", ms=4, label="each batch" if b == 0 else None)
  ax.set_xticks(x, [str(int(v)) for v in t])
  ax.set_xlabel("timestep t (sampling runs left to right)")
  ax.set_ylabel("seconds per step (compile excluded)")
  ax.grid(True, axis="y", alpha=0.3)
  notes = [f"{seconds.shape[0]} batch(es)"]
  if compile_seconds is not None:
    notes.append(f"compile {float(np.sum(compile_seconds)):.1f} s in total")
  if prepare_seconds is not None:
    notes.append(f"plans {float(np.sum(prepare_seconds)):.2f} s (once per run)")
  ax.set_title("Sampling time per step\n" + ", ".join(notes), fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def write_run_plots(workdir: str, metrics: dict) -> list[str]:
  """Writes ``concentration.png`` (when the run measured posterior support), ``budgets.png``
  (GoldDiff runs) and ``step_seconds.png`` from a run's metrics; returns the file names."""
  timesteps = [int(t) for t in metrics["timesteps"]]
  n = int(metrics["num_images"])
  budgets = metrics.get("golden_budgets")
  figures = {"step_seconds.png": timing_figure(timesteps, metrics["step_seconds"],
                                               metrics.get("compile_seconds"),
                                               metrics.get("prepare_seconds"))}
  support = metrics.get("posterior_support")
  if support:
    figures["concentration.png"] = concentration_figure(
        support["timesteps"], support["effective_size_mean"], support["support_mean"],
        num_images=n, mass=support.get("mass", 0.99),
        golden_k=[b["k"] for b in budgets] if budgets else None,
        what=f"unmasked posterior over all N, mean of the run's first "
             f"{support['num_samples']} samples")
  if budgets:
    figures["budgets.png"] = budgets_figure([b["t"] for b in budgets], [b["m"] for b in budgets],
                                            [b["k"] for b in budgets], num_images=n,
                                            expansion=[b.get("expansion", False)
                                                       for b in budgets])
  for name, fig in figures.items():
    write_figure(os.path.join(workdir, name), fig)
  return sorted(figures)
