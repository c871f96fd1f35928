r"""Two moons: the posterior shrinks onto a few training points as t → 0 (the paper's Figure 1).

  .venv/bin/python experiments/figure1_moons.py --output=docs/figure1_moons.png

Samples the built-in ``moons`` dataset (2-D points, N = 2000 by default) with the exact empirical
posterior-mean denoiser (``method="optimal"``) and draws

* top row: at a few timesteps (``--panel_t``: from pure noise, through the stages where the
  weight covers the dataset, one moon, a neighbourhood, to t = 0), every
  training point coloured by its posterior weight w_i ∝ exp(−‖x_t − √ᾱ_t x_i‖² / (2(1 − ᾱ_t)))
  for one sample's own x_t (relative to the largest weight); the + and the dashed circle are the
  Gaussian's centre x_t/√ᾱ_t and radius √((1 − ᾱ_t)/ᾱ_t), the × is that step's prediction x̂_0
  (the weighted mean);
* bottom left: the training points and the samples;
* bottom right: the effective support size exp(entropy) of the weights, and the number of points
  holding 99% of the mass, against t for every sample (median and 10–90% band).

Runs offline in well under a minute on a CPU.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # the configs package lives at the repository root

import golddiff_jax as gd  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax import cli, diagnostics, plots, schedules  # noqa: E402
from golddiff_jax import data as data_lib  # noqa: E402


def moons(num_points: int, data_dir: str | None = None) -> np.ndarray:
  """The built-in two-moons training set as [N, 1, 1, 2] points in [−1, 1]²."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config().data
  config.update(dataset="moons", num_images=num_points, resolution=None, subset_size=None,
                data_dir=data_dir)
  return data_lib.load_images(config).images


def posterior_weights(stats, x_t: np.ndarray, t: int) -> np.ndarray:
  """[B, N] normalised posterior weights over the training set at flattened x_t [B, D]."""
  logits = diagnostics.full_logits(stats.database, jax.numpy.asarray(x_t, jax.numpy.float32),
                                   schedules.alpha_bar(t), 1.0, chunk=stats.num_images)
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def trace(points: np.ndarray, num_samples: int, num_steps: int, seed: int) -> dict:
  """Samples with the optimal denoiser and measures the posterior at every visited x_t."""
  stats = gd.fit(points)
  latents = gd.noise(jax.random.key(seed), num_samples, stats.image_shape)
  out = gd.sample(stats, latents, method="optimal", num_steps=num_steps)
  states = schedules.ddim_states(latents, out.x0_trajectory, out.timesteps)
  states = states.reshape(num_steps, num_samples, -1)
  effective, support = [], []
  for x_t, t in zip(states, out.timesteps):
    found = diagnostics.posterior_support(stats, x_t, schedules.alpha_bar(int(t)))
    effective.append(np.asarray(found["effective_size"]))
    support.append(np.asarray(found["support"]))
  return {"stats": stats, "timesteps": out.timesteps, "states": states,
          "x0": out.x0_trajectory.reshape(num_steps, num_samples, -1),
          "samples": out.images.reshape(num_samples, -1),
          "effective_size": np.stack(effective), "support": np.stack(support)}


def figure(traced: dict, panel_t=(990, 300, 150, 50, 0)) -> Figure:
  """The picture described in the module docstring."""
  stats, ts = traced["stats"], traced["timesteps"]
  database = np.asarray(stats.database)
  steps = np.unique([int(np.argmin(np.abs(ts - t))) for t in panel_t])  # nearest visited t
  fig = Figure(figsize=(3.0 * len(steps), 6.6), dpi=plots.DPI)
  grid = fig.add_gridspec(2, len(steps), height_ratios=[1, 1.15])
  lim = (-1.35, 1.35)
  for col, j in enumerate(steps):
    t = int(ts[j])
    x_t = traced["states"][j, :1]
    w = posterior_weights(stats, x_t, t)[0]
    rel = w / w.max()
    order = np.argsort(rel)
    ax = fig.add_subplot(grid[0, col])
    ax.scatter(database[:, 0], database[:, 1], s=3, c="0.85", lw=0)
    shown = ax.scatter(database[order, 0], database[order, 1], s=5, c=rel[order], cmap="viridis",
                       vmin=0, vmax=1, lw=0, alpha=np.clip(rel[order] * 4, 0.05, 1))
    abar = schedules.alpha_bar(t)
    centre = x_t[0] / np.sqrt(abar)
    radius = np.sqrt((1 - abar) / abar)
    ax.plot(*centre, "k+", ms=10, mew=2)
    ax.add_patch(Circle(centre, radius, fill=False, ls="--", lw=1, color="k"))
    ax.plot(*traced["x0"][j, 0], "rx", ms=9, mew=2)
    ax.set_title(f"t = {t}: exp(H) = {traced['effective_size'][j, 0]:.1f}", fontsize=10)
    ax.set(xlim=lim, ylim=lim, aspect="equal", xticks=[], yticks=[])
  fig.colorbar(shown, ax=fig.axes[-1], fraction=0.05, pad=0.02, label="weight / max weight")
  half = max(1, len(steps) // 2)
  ax = fig.add_subplot(grid[1, :half])
  samples = traced["samples"]
  ax.scatter(database[:, 0], database[:, 1], s=3, c="0.7", lw=0,
             label=f"training (N={len(database)})")
  ax.scatter(samples[:, 0], samples[:, 1], s=9, c="C3", lw=0, label=f"samples ({len(samples)})")
  ax.set(xlim=lim, ylim=lim, aspect="equal", title="training points and samples")
  ax.legend(fontsize=8, loc="lower left")
  ax = fig.add_subplot(grid[1, half:])
  plots.plot_concentration(ax, ts, traced["effective_size"], traced["support"],
                           num_images=len(database))
  ax.set_title("posterior concentration along the samples' own x_t", fontsize=10)
  fig.suptitle("Two moons: the posterior over the training points concentrates as t → 0 "
               "(optimal denoiser, one sample's x_t in the top row)", fontsize=11)
  fig.tight_layout()
  return fig


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  try:
    panel_t = [int(t) for t in args.panel_t]
  except ValueError:
    cli.fail(f"--panel_t must be integer timesteps, got {','.join(args.panel_t)}")
  try:
    points = moons(args.num_points, args.data_dir)
    traced = trace(points, args.num_samples, args.num_steps, args.seed)
  except ValueError as e:
    cli.fail(e)
  plots.write_figure(args.output, figure(traced, panel_t))
  ts, eff = traced["timesteps"], np.median(traced["effective_size"], axis=1)
  shown = [int(np.argmin(np.abs(ts - t))) for t in panel_t]
  print(f"wrote {args.output}; median effective support size (of N={len(points)}): "
        + ", ".join(f"t={int(ts[j])}: {eff[j]:.1f}" for j in shown))


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cli.fail(e)


if __name__ == "__main__":
  # Flags are defined here, not at import, so tests can import this module beside other scripts.
  flags.DEFINE_string("output", "docs/figure1_moons.png", "Where to write the PNG.")
  flags.DEFINE_integer("num_points", 2000, "Training points N.", lower_bound=2)
  flags.DEFINE_integer("num_samples", 256, "Samples drawn.", lower_bound=1)
  flags.DEFINE_integer("num_steps", 100, "DDIM steps.", lower_bound=2, upper_bound=1000)
  flags.DEFINE_list("panel_t", ["990", "300", "150", "50", "0"],
                    "Timesteps of the top row (the nearest visited ones are shown).")
  flags.DEFINE_integer("seed", 0, "Seed of the initial noise.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir (None: the TFDS default).")
  app.run(main, flags_parser=_parse_flags)
