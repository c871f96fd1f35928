r"""GoldDiff on a large database: step, preparation and compile time and memory at one (N, k).

  python experiments/million.py --num_images=1000000 --k_min=10000 --k_max=20000 \
      --num_steps=4 --output=docs/million/n1000000_k20000_d1.json
  python experiments/million.py --fake_cpu_devices=8 --devices=8 --num_images=1000000 ...
  python experiments/million.py --plot=docs/million   # the two plots from the JSON files there

One configuration per process, so that the process's peak resident memory (``ru_maxrss``) is the
configuration's own. The database is procedural 16×16×3 images (`procedural_images`), generated
once (`database`: 50,000 images and transformed copies of them; every N is a prefix of the same
1M images) and cached as a float32 ``.npy`` file (``--cache``), read memory-mapped.
``--devices=8`` shards the database over 8 devices (``--fake_cpu_devices=8`` on a CPU). Reported per run (JSON):
``step_seconds`` (each step, compile excluded), ``compile_seconds``, ``prepare_seconds`` (data
placement, every step's mask and plan, the proxy database), ``fit_seconds`` (`gd.fit`, or placing
the database with mean and eigenvectors cached from an earlier run of the same N), XLA's memory
estimate of the largest step per device (``step_bytes``), the database bytes per device, and
``max_rss_bytes`` of the process.
"""

import glob
import json
import os
import resource
import time

from absl import app, flags
import numpy as np

_N = flags.DEFINE_integer("num_images", 1_000_000, "Database size N (a prefix of the cache).")
_RES = flags.DEFINE_integer("resolution", 16, "Image side (16×16×3).")
_BATCH = flags.DEFINE_integer("batch", 16, "Samples per batch.")
_STEPS = flags.DEFINE_integer("num_steps", 4, "DDIM steps.")
_K_MIN = flags.DEFINE_integer("k_min", 10_000, "GoldDiff k_min.")
_K_MAX = flags.DEFINE_integer("k_max", 20_000, "GoldDiff k_max.")
_THRESHOLD = flags.DEFINE_float("mask_threshold", 0.03, "θ.")
_HIGH_NOISE = flags.DEFINE_string("high_noise", None, "GoldDiff high_noise option (default: "
                                  "the module default).")
_DEVICES = flags.DEFINE_integer("devices", 1, "Shard the database over this many devices "
                                "(1: no mesh).")
_FAKE = flags.DEFINE_integer("fake_cpu_devices", 0, "If > 0, split the CPU into this many "
                             "XLA devices (set before JAX starts).")
_CACHE = flags.DEFINE_string("cache", "/tmp/golddiff_million_16x16x3.npy",
                             "float32 .npy cache of the generated images.")
_BLOCK = 50_000
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results.")
_PLOT = flags.DEFINE_string("plot", None, "Folder of result JSON files: write the two plots "
                            "there instead of running.")


def database(n: int, res: int) -> np.ndarray:
  """The first n of the cached images, [n, res, res, 3] float32 (memory-mapped).

  Generating 1M procedural images directly takes ~30 min on this CPU, so the cache holds 50,000
  procedural images (seed 0) and, for every further block of 50,000, the same images shuffled,
  circularly shifted by a block-specific (dy, dx), mirrored on odd blocks and with their colour
  channels permuted: distinct vectors with the same (stationary) statistics.
  """
  from golddiff_jax.data import procedural_images  # pylint: disable=g-import-not-at-top
  path = _CACHE.value
  if os.path.exists(path):
    images = np.load(path, mmap_mode="r")
    if images.shape[0] >= n and images.shape[1:] == (res, res, 3):
      return images[:n]
  total = -(-max(n, 1_000_000) // _BLOCK) * _BLOCK
  out = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32,
                                  shape=(total, res, res, 3))
  base = procedural_images(_BLOCK, res, res, 3, seed=0)
  channel_orders = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2)]
  for j in range(total // _BLOCK):
    rng = np.random.default_rng(j)
    block = base if j == 0 else np.roll(base[rng.permutation(_BLOCK)],
                                        (j % res, (5 * j + 3) % res), axis=(1, 2))
    if j % 2:
      block = block[:, :, ::-1]
    out[j * _BLOCK:(j + 1) * _BLOCK] = block[..., list(channel_orders[j % 6])]
  out.flush()
  del out
  os.replace(path + ".part", path)
  return np.load(path, mmap_mode="r")[:n]


def run() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
  n, res = _N.value, _RES.value
  start = time.perf_counter()
  images = database(n, res)
  data_seconds = time.perf_counter() - start
  mesh = gd.make_mesh(data=_DEVICES.value, batch=1) if _DEVICES.value > 1 else None
  start = time.perf_counter()
  moments_path = f"{_CACHE.value}.moments_{n}.npz"  # mean and eigh of the first n images
  if os.path.exists(moments_path):  # the float64 covariance of 1M images takes ~7 min here
    from golddiff_jax import stats as stats_lib  # pylint: disable=g-import-not-at-top
    with np.load(moments_path) as f:
      mean, eigvals, eigvecs = f["mean"], f["eigvals"], f["eigvecs"]
    stats = stats_lib.from_arrays(images.reshape(n, -1), mean, eigvals, eigvecs,
                                  images.shape[1:], mesh=mesh)
  else:
    stats = gd.fit(images, mesh=mesh)
    np.savez(moments_path, mean=np.asarray(stats.mean), eigvals=np.asarray(stats.eigvals),
             eigvecs=np.asarray(stats.eigvecs))
  jax.block_until_ready(stats)
  fit_seconds = time.perf_counter() - start
  del images
  latents = gd.noise(jax.random.key(7), _BATCH.value, stats.image_shape)
  options = dict(k_min=_K_MIN.value, k_max=_K_MAX.value, mask_threshold=_THRESHOLD.value)
  if _HIGH_NOISE.value:
    options["high_noise"] = _HIGH_NOISE.value
  out = gd.sample(stats, latents, method="golddiff", num_steps=_STEPS.value,
                  key=jax.random.key(1), mesh=mesh, **options)
  rows = stats.database.addressable_shards[0].data.shape[0] if mesh else n
  return {"num_images": n, "image_shape": list(stats.image_shape), "batch": _BATCH.value,
          "k_min": _K_MIN.value, "k_max": _K_MAX.value, "devices": _DEVICES.value,
          "num_steps": _STEPS.value, "timesteps": out.timesteps.tolist(),
          "step_seconds": out.step_seconds.tolist(),
          "compile_seconds": out.compile_seconds.tolist(),
          "prepare_seconds": float(out.prepare_seconds), "fit_seconds": fit_seconds,
          "data_seconds": data_seconds, "step_bytes": out.step_bytes.tolist(),
          "database_bytes_per_device": int(rows * stats.dim * 4),
          "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "finite": bool(np.isfinite(out.images).all()),
          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def plot(folder: str) -> None:
  """step_vs_n.png (k 500…1000) and step_vs_k.png (N = 1M) from the 1-device JSON files."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
  runs = [r for r in runs if r["devices"] == 1]

  def draw(selected, x_of, xlabel, title, name, extra=None):
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    xs = [x_of(r) for r in selected]
    for j, marker in enumerate(("o-", "^-")):
      ts = {r["timesteps"][j] for r in selected}
      ax.loglog(xs, [r["step_seconds"][j] for r in selected], marker,
                label=f"step at t = {'/'.join(str(t) for t in sorted(ts))}")
    if extra:
      ax.loglog(xs, [extra(r) for r in selected], "s--", label="preparation (once per run)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=120)
    plt.close(fig)

  by_n = sorted((r for r in runs if r["k_max"] == 1000), key=lambda r: r["num_images"])
  draw(by_n, lambda r: r["num_images"], "database size N (16×16×3)",
       "GoldDiff step vs N, k 500…1000, batch 16\n(2-core CPU shared with other jobs)",
       "step_vs_n.png", extra=lambda r: r["prepare_seconds"])
  by_k = sorted((r for r in runs if r["num_images"] == 1_000_000), key=lambda r: r["k_max"])
  draw(by_k, lambda r: r["k_max"], "k_max (k_min = k_max / 2)",
       "GoldDiff step vs k, N = 1,000,000, batch 16\n(2-core CPU shared with other jobs)",
       "step_vs_k.png")


def main(argv):
  del argv
  if _PLOT.value:
    plot(_PLOT.value)
    return
  if _FAKE.value > 0:  # before JAX initialises its backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={_FAKE.value}")
  result = run()
  print(json.dumps(result))
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
