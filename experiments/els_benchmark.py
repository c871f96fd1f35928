r"""Full ELS against golden-subset ELS, side by side in one process, and ELS's achieved FLOP/s.

Both methods sample from the same latents with the same patch-size schedule; the golden version
uses GoldDiff's budgets (``--config.golden.*``). Reported: seconds per step of each (compile
excluded), the speed-up per step and in total, the golden version's error against full ELS
(MSE and r² of the x̂_0 at every step and of the final images, `golddiff_jax.metrics`), and full
ELS's achieved GFLOP/s (2 × `els.multiply_adds` of the step's convolutions / step seconds)
against this machine's float32 matmul rate measured in the same process
(``--peak_size``² × ``--peak_size`` products, best of 5).

    .venv/bin/python experiments/els_benchmark.py --config=configs/default.py:method=els \
        --output_dir=workdir/els_benchmark [--num_samples=4]

Writes ``benchmark.json``, ``benchmark.md`` and ``samples.png`` (final images: full ELS above,
golden ELS below) to ``--output_dir``; bad input prints one
``error:`` line and exits with status 2.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # the configs package lives at the repository root

import golddiff_jax as gd  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax import cli, metrics, outputs, run_config, stats_cache, workdirs  # noqa: E402
from golddiff_jax import schedules  # noqa: E402
from golddiff_jax.denoisers import els, els_golden  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config (method=els).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where benchmark.json/.md go.")
_SAMPLES = flags.DEFINE_integer("num_samples", 4, "Samples (one batch).")
_PEAK = flags.DEFINE_integer("peak_size", 2048, "Side of the square matmul for the peak rate.")


def matmul_gflops(size: int, repeats: int = 5) -> float:
  """Best float32 GFLOP/s of a [size, size] @ [size, size] product (precision HIGHEST)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda x: jnp.matmul(x, x, precision=jax.lax.Precision.HIGHEST))
  f(a).block_until_ready()
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best / 1e9


def benchmark(config, output_dir: str, *, num_samples: int, peak_size: int) -> dict:
  if config.method != "els":
    raise ValueError(f"the config must select method=els, got {config.method!r}")
  if num_samples < 1 or peak_size < 1:
    raise ValueError("--num_samples and --peak_size must be >= 1")
  run_config.validate(config)
  output_dir = workdirs.ensure_workdir(output_dir)
  stats, _ = stats_cache.for_experiment(config, output_dir)
  steps = config.sampler.num_steps
  noise_key, sample_key = jax.random.split(jax.random.key(config.seed))
  latents = gd.noise(noise_key, num_samples, stats.image_shape)
  full_options = run_config.method_options(config)
  golden_config = config.copy_and_resolve_references()
  golden_config.method = "els_golden"
  golden_options = run_config.method_options(golden_config)
  peak_before = matmul_gflops(peak_size)
  runs = {}
  for name, method, options in (("els", "els", full_options),
                                ("els_golden", "els_golden", golden_options)):
    print(f"{name}: options {options}", flush=True)
    out = gd.sample(stats, latents, method=method, num_steps=steps, key=sample_key, **options)
    runs[name] = out
    print(f"{name}: step seconds {np.round(out.step_seconds, 3).tolist()}", flush=True)
  peak_after = matmul_gflops(peak_size)
  full, golden = runs["els"], runs["els_golden"]
  sizes = els.patch_sizes(full_options["patch_size"], steps)
  flops = [2.0 * els.multiply_adds(stats.image_shape, k, full_options["padding"], num_samples,
                                   stats.num_images) for k in sizes]
  per_step = metrics.trajectory_metrics(golden.x0_trajectory, full.x0_trajectory)
  plan = els_golden.prepare_run(stats, [schedules.alpha_bar(int(t)) for t in full.timesteps],
                                els_golden.Options(**golden_options), num_samples)
  results = {
      "timesteps": full.timesteps.tolist(), "patch_size": sizes,
      "golden_k": [int(p.retrieval.k) for p in plan], "golden_m": [int(p.retrieval.m)
                                                                  for p in plan],
      "els_step_seconds": full.step_seconds.tolist(),
      "golden_step_seconds": golden.step_seconds.tolist(),
      "speedup_per_step": (full.step_seconds / golden.step_seconds).tolist(),
      "speedup_total": float(full.step_seconds.sum() / golden.step_seconds.sum()),
      "els_compile_seconds": full.compile_seconds.tolist(),
      "golden_compile_seconds": golden.compile_seconds.tolist(),
      "els_gflops_per_step": [f / s / 1e9 for f, s in zip(flops, full.step_seconds)],
      "els_glogits_per_second": [
          num_samples * stats.num_images * els.logits_per_image(
              stats.image_shape, k, full_options["padding"]) / s / 1e9
          for k, s in zip(sizes, full.step_seconds)],
      "matmul_peak_gflops": [peak_before, peak_after],
      "golden_vs_els": {"final": metrics.compare(golden.images, full.images),
                        "per_step": per_step},
      "setup": {"dataset": config.data.dataset, "num_images": stats.num_images,
                "image_shape": list(stats.image_shape), "num_samples": num_samples,
                "num_steps": steps, "padding": full_options["padding"],
                "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}}
  outputs.write_json(os.path.join(output_dir, "benchmark.json"), results)
  # Final images: full ELS in the first row, golden-subset ELS in the second.
  outputs.write_png(os.path.join(output_dir, "samples.png"), outputs.readable_grid(
      np.concatenate([full.images, golden.images]), columns=num_samples))
  peak = max(peak_before, peak_after)
  lines = ["| t | k | golden k_t | ELS s | golden s | speed-up | ELS GFLOP/s (% of matmul) "
           "| golden vs ELS r² |", "|---|---|---|---|---|---|---|---|"]
  for j, t in enumerate(results["timesteps"]):
    g = results["els_gflops_per_step"][j]
    lines.append(
        f"| {t} | {sizes[j]} | {results['golden_k'][j]} | {full.step_seconds[j]:.2f} | "
        f"{golden.step_seconds[j]:.2f} | {results['speedup_per_step'][j]:.1f}× | "
        f"{g:.1f} ({100 * g / peak:.0f}%) | {per_step['r2_per_step'][j]:.3f} |")
  final = results["golden_vs_els"]["final"]
  lines += ["", f"Total: ELS {full.step_seconds.sum():.1f} s, golden ELS "
            f"{golden.step_seconds.sum():.1f} s ({results['speedup_total']:.1f}×); final images "
            f"golden vs ELS: MSE {final['mse']:.4f}, r² {final['r2']:.3f}; matmul "
            f"{peak_before:.0f} / {peak_after:.0f} GFLOP/s (before / after)."]
  with open(os.path.join(output_dir, "benchmark.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return results


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    benchmark(_CONFIG.value, _OUTPUT.value, num_samples=_SAMPLES.value, peak_size=_PEAK.value)
  except ValueError as e:
    cli.fail(e)
  with open(os.path.join(_OUTPUT.value, "benchmark.md")) as f:
    print(f.read())


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_OUTPUT]))
