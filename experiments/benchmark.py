r"""Times analytical denoisers side by side in one process, on the same data and latents.

  python experiments/benchmark.py --num_images=5000 --resolution=32 --channels=3 --batch=16 \
      --methods=optimal,wiener,pca_locality:dense,pca_locality:bf16x3,pca_locality:auto

Each entry of --methods is ``method`` or ``method:mask_impl``, optionally followed by
``+option=value`` pairs (e.g. ``golddiff:dense+high_noise=pool``; values are parsed as Python
literals where possible). With ``--devices=1,2,4,8`` every
variant also runs with the database sharded over that many devices (``gd.make_mesh(data=d)``; 1 =
the unsharded path) and the table reports the database bytes each device holds; on a CPU-only
machine add ``--fake_cpu_devices=8`` (XLA's host-platform device count, set before JAX starts). Every variant samples the same latents;
each step is compiled ahead of its timed execution, and with --warmup (default) a first untimed run
also warms caches (its compile seconds are the ones reported).
Reported per variant: median and mean step seconds, compile seconds, XLA's memory estimate of the
largest step, and the final images' max |difference| to the reference variant. For pca_locality the
table adds the work of the masked contraction per step: dense FLOPs 2·B·N·D² and useful FLOPs
2·B·N·nnz(M_t), and the achieved GFLOP/s of each, next to this machine's measured float32 matmul peak.
"""

import ast
import json
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import golddiff_jax as gd
from golddiff_jax import masks, schedules
from golddiff_jax.data import procedural_images

_N = flags.DEFINE_integer("num_images", 5000, "Database size N.")
_RES = flags.DEFINE_integer("resolution", 32, "Image height and width.")
_CH = flags.DEFINE_integer("channels", 3, "Image channels.")
_BATCH = flags.DEFINE_integer("batch", 16, "Samples per batch.")
_STEPS = flags.DEFINE_integer("num_steps", 10, "DDIM steps.")
_METHODS = flags.DEFINE_list("methods", ["optimal", "wiener", "pca_locality:dense"],
                             "Variants: method or method:mask_impl.")
_REFERENCE = flags.DEFINE_string("reference", None, "Variant the others are compared with "
                                 "(default: the first).")
_THRESHOLD = flags.DEFINE_float("mask_threshold", 0.05, "PCA-locality θ.")
_K_MIN = flags.DEFINE_integer("k_min", None, "GoldDiff k_min (default N/20).")
_K_MAX = flags.DEFINE_integer("k_max", None, "GoldDiff k_max (default N/10).")
_SEED = flags.DEFINE_integer("seed", 0, "Data and noise seed.")
_WARMUP = flags.DEFINE_bool("warmup", True, "Run each variant once untimed before timing it "
                            "(steps are compiled ahead of timing either way).")
_OUTPUT = flags.DEFINE_string("output", None, "Optional JSON file for the results.")
_DEVICES = flags.DEFINE_list("devices", [], "Device counts to shard the database over "
                             "(e.g. 1,2,4,8); empty: one device, no mesh.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Time every variant this many times, round-robin "
                               "(variant 1, 2, …, 1, 2, …), and report each step's median over "
                               "the repeats: load that drifts during the run then hits every "
                               "variant alike.")
_FAKE = flags.DEFINE_integer("fake_cpu_devices", 0, "If > 0, split the CPU into this many XLA "
                             "devices (for --devices on a CPU-only machine).")


def matmul_peak_gflops(m: int = 4096, k: int = 3072, n: int = 3072,
                       repeats: int = 8) -> tuple[float, float]:
  """Best float32 GFLOP/s of one [m, k] × [k, n] product: (XLA at precision HIGHEST, NumPy/BLAS)."""
  a = jnp.ones((m, k), jnp.float32)
  b = jnp.ones((k, n), jnp.float32)
  f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
  f(a, b).block_until_ready()
  a_np, b_np = np.ones((m, k), np.float32), np.ones((k, n), np.float32)
  best_xla = best_np = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, b).block_until_ready()
    best_xla = min(best_xla, time.perf_counter() - start)
    start = time.perf_counter()
    a_np @ b_np
    best_np = min(best_np, time.perf_counter() - start)
  flops = 2 * m * k * n
  return flops / best_xla / 1e9, flops / best_np / 1e9


def mask_nnz(stats, num_steps: int, threshold: float) -> np.ndarray:
  return np.asarray([float(masks.locality_mask(stats.eigvals, stats.eigvecs,
                                               schedules.alpha_bar(t), threshold).sum())
                     for t in schedules.ddim_timesteps(num_steps)])


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_variant(variant: str) -> tuple[str, str, dict]:
  """'method[:mask_impl][+option=value…]' → (method, mask_impl or '', extra options)."""
  head, *pairs = variant.split("+")
  method, _, impl = head.partition(":")
  extra = {}
  for pair in pairs:
    name, sep, value = pair.partition("=")
    if not sep:
      raise app.UsageError(f"variant {variant!r}: expected +option=value, got +{pair!r}")
    extra[name] = _literal(value)
  return method, impl, extra


def run_variant(stats, latents, variant: str, key, devices: int = 0) -> dict:
  """Samples with one variant; ``devices`` > 1 shards the database over that many devices."""
  method, impl, extra = parse_variant(variant)
  mesh = gd.make_mesh(data=devices) if devices > 1 else None
  if mesh is not None:
    stats = gd.shard_stats(stats, mesh)
  options = {}
  if method in ("pca_locality", "golddiff"):
    options["mask_threshold"] = _THRESHOLD.value
    if impl:
      options["mask_impl"] = impl
  if method == "golddiff":
    options.update(k_min=_K_MIN.value, k_max=_K_MAX.value)
  options.update(extra)
  compile_seconds = None
  if _WARMUP.value:
    warm = gd.sample(stats, latents, method=method, num_steps=_STEPS.value, key=key, mesh=mesh,
                     **options)
    compile_seconds = float(warm.compile_seconds.sum())
  out = gd.sample(stats, latents, method=method, num_steps=_STEPS.value, key=key, mesh=mesh,
                  **options)
  shard_rows = stats.database.addressable_shards[0].data.shape[0] if mesh else stats.num_images
  name = f"{variant}@{devices}" if devices else variant
  return {"variant": name, "method": method, "images": out.images, "devices": max(devices, 1),
          "database_bytes_per_device": int(shard_rows * stats.dim * 4),
          "step_seconds": out.step_seconds,
          "compile_seconds": compile_seconds or float(out.compile_seconds.sum()),
          "prepare_seconds": float(out.prepare_seconds),
          "peak_bytes": int(out.step_bytes.max())}


def main(argv):
  del argv
  if _FAKE.value > 0:  # must happen before JAX initialises its backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={_FAKE.value}")
  device_counts = [int(d) for d in _DEVICES.value] or [0]
  if max(device_counts) > jax.device_count():
    raise app.UsageError(f"--devices asks for {max(device_counts)} devices; "
                         f"{jax.device_count()} available (see --fake_cpu_devices)")
  n, res, ch, batch = _N.value, _RES.value, _CH.value, _BATCH.value
  print(f"# {time.strftime('%Y-%m-%d')}  backend={jax.default_backend()} "
        f"devices={jax.device_count()}  N={n} {res}x{res}x{ch} batch={batch}")
  peak, blas_peak = matmul_peak_gflops()
  print(f"measured float32 matmul peak, best of 8 (4096x3072x3072): XLA HIGHEST {peak:.1f} "
        f"GFLOP/s, NumPy/BLAS {blas_peak:.1f} GFLOP/s")
  images = procedural_images(n, res, res, ch, seed=_SEED.value)
  start = time.perf_counter()
  stats = gd.fit(images)
  print(f"fit: {time.perf_counter() - start:.1f} s")
  latents = gd.noise(jax.random.key(_SEED.value + 7), batch, stats.image_shape)
  key = jax.random.key(_SEED.value + 1)
  variants = [(v, d) for v in _METHODS.value for d in device_counts]
  rounds = [[run_variant(stats, latents, v, key, d) for v, d in variants]
            for _ in range(max(1, _REPEATS.value))]
  results = rounds[0]
  for j, r in enumerate(results):
    r["step_seconds_repeats"] = np.stack([rnd[j]["step_seconds"] for rnd in rounds])
    r["step_seconds"] = np.median(r["step_seconds_repeats"], axis=0)
  reference = next(r for r in results if r["variant"] == (_REFERENCE.value or results[0]["variant"]))
  d = stats.dim
  nnz = mask_nnz(stats, _STEPS.value, _THRESHOLD.value)
  ts = schedules.ddim_timesteps(_STEPS.value)
  print("\nper step (seconds" + (f", median of {_REPEATS.value} round-robin repeats"
                                  if _REPEATS.value > 1 else "") + ")")
  print("| variant | " + " | ".join(f"t={t}" for t in ts) + " |")
  print("|---" * (len(ts) + 1) + "|")
  for r in results:
    print(f"| {r['variant']} | " + " | ".join(f"{v:.3f}" for v in r["step_seconds"]) + " |")
  print("\n| variant | devices | median s/step | mean s/step | compile s | prepare s "
        "| step memory MB "
        f"| database MB/device | max abs diff vs {reference['variant']} "
        "| rel. diff vs fewest devices |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in results:
    diff = float(np.max(np.abs(r["images"] - reference["images"])))
    base = next(b for b in results if b["variant"].split("@")[0] == r["variant"].split("@")[0])
    rel = float(np.linalg.norm(r["images"] - base["images"]) / np.linalg.norm(base["images"]))
    print(f"| {r['variant']} | {r['devices']} | {np.median(r['step_seconds']):.3f} | "
          f"{np.mean(r['step_seconds']):.3f} | {r['compile_seconds']:.1f} | "
          f"{r['prepare_seconds']:.1f} | "
          f"{r['peak_bytes'] / 2**20:.0f} | {r['database_bytes_per_device'] / 2**20:.1f} | "
          f"{diff:.2e} | {rel:.1e} |")
  masked = [r for r in results if r["method"] == "pca_locality" and r["devices"] == 1]
  if masked:
    ts = schedules.ddim_timesteps(_STEPS.value)
    print(f"\nmasked contraction work per step (peak {peak:.0f} GFLOP/s): "
          "dense GFLOP/s | useful (nnz) GFLOP/s")
    print("| t | mask density | " + " | ".join(r["variant"] + " s" for r in masked) + " | "
          + " | ".join(r["variant"] + " dense GF/s | useful GF/s" for r in masked) + " |")
    print("|---" * (2 + 3 * len(masked)) + "|")
    for j, t in enumerate(ts):
      secs = [r["step_seconds"][j] for r in masked]
      rates = [f"{2 * batch * n * d * d / s / 1e9:.0f} | {2 * batch * n * nnz[j] / s / 1e9:.0f}"
               for s in secs]
      print(f"| {t} | {nnz[j] / d / d:.3f} | " + " | ".join(f"{s:.2f}" for s in secs) + " | "
            + " | ".join(rates) + " |")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump({"peak_gflops": peak, "blas_peak_gflops": blas_peak, "mask_density": (nnz / d / d).tolist(),
                 "results": [{k: (v.tolist() if isinstance(v, np.ndarray) else v)
                              for k, v in r.items() if k != "images"} for r in results]},
                f, indent=1)


if __name__ == "__main__":
  app.run(main)
