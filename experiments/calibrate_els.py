r"""Calibrates ELS's patch size per sampling step against the reference network.

Kamb & Ganguli pick the patch size k_t of each step by matching a trained network. Here, for each
DDIM step t_j of a ``--num_steps`` run, the reference network samples from ``--num_samples``
latents (`golddiff_jax.models.reference.sample`), and its own x_t at that step is the input
(teacher forcing: each step is calibrated on the network's trajectory, independently of the
others). For every candidate k in ``--sizes`` the ELS prediction x̂_0(x_t; k) is compared with the
network's x̂_0(x_t) by r² (`golddiff_jax.metrics.r2`), and the k with the highest r² is kept.

    .venv/bin/python experiments/calibrate_els.py \
        --config=configs/default.py:method=els --reference=workdir/reference_mnist5k \
        --output_dir=workdir/els_calibration [--sizes=3,5,7,11,15,19,23,27] [--num_samples=8]

The ELS options (padding, temperature, chunking) and the database come from the config
(``method=els``; ``n=`` takes the first n digits). Writes ``calibration.json`` (r² per step and
size, the chosen schedule, the setup) and ``calibration.md`` to ``--output_dir`` and prints the
schedule as a tuple for ``config.denoiser.patch_size``. Bad input prints one ``error:`` line and
exits with status 2.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

import golddiff_jax as gd
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # the configs package lives at the repository root

from golddiff_jax import cli, metrics, outputs, run_config, schedules  # noqa: E402
from golddiff_jax import stats_cache, workdirs  # noqa: E402



def define_flags() -> dict:
  """The command-line flags (defined only when run as a script, so importing the module for
  its helpers defines no absl flags)."""
  return {
      "config": config_flags.DEFINE_config_file("config", None, "Run config with method=els."),
      "reference": flags.DEFINE_string("reference", None,
                                       "Reference network checkpoint directory."),
      "output_dir": flags.DEFINE_string("output_dir", None, "Where calibration.json/.md go."),
      "sizes": flags.DEFINE_list("sizes", ["3", "5", "7", "11", "15", "19", "23", "27"],
                                 "Candidate odd patch sizes."),
      "num_samples": flags.DEFINE_integer("num_samples", 8,
                                          "Reference trajectories to calibrate on."),
      "num_steps": flags.DEFINE_integer("num_steps", 10,
                                        "DDIM steps of the runs the schedule is for."),
  }


def parse_sizes(values) -> list[int]:
  """Candidate sizes: distinct odd ints >= 1 (ValueError otherwise)."""
  try:
    sizes = [int(v) for v in values]
  except (TypeError, ValueError) as e:
    raise ValueError(f"--sizes must be odd integers, got {values}") from e
  if not sizes or any(k < 1 or k % 2 == 0 for k in sizes) or len(set(sizes)) != len(sizes):
    raise ValueError(f"--sizes must be distinct odd integers >= 1, got {sizes}")
  return sorted(sizes)


def best_sizes(r2_table: np.ndarray, sizes) -> list[int]:
  """Per step (rows) the size (columns) with the highest r²; ties go to the smaller size."""
  return [int(sizes[int(np.argmax(row))]) for row in np.asarray(r2_table)]


def calibrate(config, reference_dir: str, output_dir: str, *, sizes, num_samples: int,
              num_steps: int) -> dict:
  """Runs the calibration (module docstring); returns the results dict and writes it."""
  from golddiff_jax.models import reference  # pylint: disable=g-import-not-at-top
  if config.method != "els":
    raise ValueError(f"the config must select method=els, got {config.method!r}")
  if num_samples < 1 or num_steps < 1:
    raise ValueError("--num_samples and --num_steps must be >= 1")
  run_config.validate(config)
  output_dir = workdirs.ensure_workdir(output_dir)
  model = reference.load_reference(reference_dir, image_shape=run_config.image_shape(config))
  stats, _ = stats_cache.for_experiment(config, output_dir)
  noise_key, _ = jax.random.split(jax.random.key(config.seed))
  latents = gd.noise(noise_key, num_samples, stats.image_shape)
  ref = reference.sample(model, latents, num_steps=num_steps)
  timesteps = [int(t) for t in schedules.ddim_timesteps(num_steps)]
  options = {k: v for k, v in run_config.method_options(config).items() if k != "patch_size"}
  inputs = schedules.ddim_states(latents, ref.x0_trajectory, timesteps)  # the network's x_t
  table = np.full((num_steps, len(sizes)), np.nan)
  seconds = np.zeros((num_steps, len(sizes)))
  for j, t in enumerate(timesteps):
    net = ref.x0_trajectory[j]
    for i, k in enumerate(sizes):
      start = time.perf_counter()
      x0 = np.asarray(gd.denoise(stats, inputs[j], t, method="els", patch_size=k, **options))
      seconds[j, i] = time.perf_counter() - start
      table[j, i] = metrics.r2(x0, net)
      print(f"  t={t} k={k}: r² {table[j, i]:.4f} ({seconds[j, i]:.1f} s)", flush=True)
    print(f"t={t}: r² " + " ".join(f"k={k}:{v:.3f}" for k, v in zip(sizes, table[j])) +
          f" → k={sizes[int(np.argmax(table[j]))]}", flush=True)
  chosen = best_sizes(table, sizes)
  results = {
      "schedule": chosen, "sizes": list(sizes), "timesteps": timesteps,
      "r2": table.tolist(), "best_r2": [float(np.max(row)) for row in table],
      "seconds": seconds.tolist(),
      "setup": {"dataset": config.data.dataset, "num_images": stats.num_images,
                "image_shape": list(stats.image_shape), "num_samples": num_samples,
                "num_steps": num_steps, "seed": int(config.seed),
                "reference": os.path.abspath(reference_dir), "reference_step": int(model.step),
                "options": options, "backend": jax.default_backend(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}}
  outputs.write_json(os.path.join(output_dir, "calibration.json"), results)
  lines = ["| t | " + " | ".join(f"k={k}" for k in sizes) + " | chosen |",
           "|---|" + "---|" * (len(sizes) + 1)]
  for t, row, k in zip(timesteps, table, chosen):
    lines.append(f"| {t} | " + " | ".join(f"{v:.3f}" for v in row) + f" | {k} |")
  with open(os.path.join(output_dir, "calibration.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return results


def main(argv, holders):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    results = calibrate(holders["config"].value, holders["reference"].value,
                        holders["output_dir"].value, sizes=parse_sizes(holders["sizes"].value),
                        num_samples=holders["num_samples"].value,
                        num_steps=holders["num_steps"].value)
  except ValueError as e:
    cli.fail(e)
  print(f"patch_size schedule: {tuple(results['schedule'])}")


if __name__ == "__main__":
  HOLDERS = define_flags()
  jax.config.config_with_absl()
  app.run(lambda argv: main(argv, HOLDERS),
          flags_parser=cli.flags_parser(HOLDERS["config"],
                                        required=[HOLDERS["reference"], HOLDERS["output_dir"]]))
