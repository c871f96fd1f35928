r"""The paper's main table (docs/method.md §8, §9.1): every analytical method against the reference
network.

  python experiments/table1.py --config=configs/default.py --reference=workdir/reference_default \
      --output_dir=workdir/table1_default [--num_samples=128] [--batch_size=16] \
      [--methods=optimal,wiener,pca_locality,golddiff,pca_locality@published] [--num_steps=10]
      [--seed=7]

Protocol (docs/method.md §8):
* Each method's config is the config file reloaded with ``method=<name>`` in its ``:arg`` (so a
  baseline gets its dataset settings, e.g. PCA-locality's own θ), then the
  ``--config.field=value`` overrides; its options are ``run_config.method_options``, and
  ``run_config.validate`` checks it before anything runs. An entry ``<method>@<mask>`` adds a row
  with the locality-mask variant ``<mask>`` (``mask=<mask>`` in the ``:arg``; see
  ``configs.common.MASK_VARIANTS``), e.g. ``pca_locality@published`` for the published mask.
  Statistics come from ``stats_cache.for_experiment``, cached in ``<output_dir>/stats``.
* The reference (``models.reference``, loaded first: a missing or incompatible checkpoint fails
  before any work) and every method start from the SAME latents, ``gd.noise`` of the first half
  of ``split(key(seed))`` as in ``run.run``; sample i's sampler key is ``fold_in(second half,
  i)`` (`gd.sample_keys`), as in the launcher, so a sample does not depend on the batch size.
  Each follows its own trajectory, and at every step the method's x̂_0 is compared with the
  reference's x̂_0 (`golddiff_jax.metrics.trajectory_metrics`); the score is the last step.
* Time (docs/method.md §8.5), per method: compile seconds (sum over all steps and batches), the
  median post-compile step seconds, the plans' seconds (masks, budgets, proxy database: built
  once per run by the batch loop shared with the launcher, `golddiff_jax.batches`), and the
  published-style number: the wall time of all of the
  method's sampling calls (plans, masks, compiles, host copies included; statistics excluded)
  divided by (batches × steps), at the stated batch size.
* Memory (docs/method.md §8.6): "peak mem" is the largest of XLA's estimates for one compiled
  sampling step (``SampleOutput.step_bytes``: that step's arguments — database, statistics, the
  step's mask or plan, latents — plus outputs and temporaries), in GiB. It leaves out what lives
  outside the step: the other steps' precomputed plans, host-side trajectories and the Python
  process. The process high-water mark
  (``outputs.peak_memory``: device ``peak_bytes_in_use``, or peak RSS on CPU; cumulative, so it is
  recorded after each method in turn) goes to metrics.json.
* Memorization (`metrics.memorization`): nearest/second-nearest L2 ratio of each final sample
  against the database, and the fraction below 1/3; also for the reference's own samples.

Outputs (atomic; ``metrics.json`` last): ``table.md``, ``table.csv``, ``metrics.json`` (per-step
lists, options, timings), ``samples.png`` (one row per method, then the reference). Bad input
(flags, config, unknown method, missing or incompatible checkpoint) prints one ``error: ...``
line and exits with status 2 before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time

from absl import app, flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # the configs package lives at the repository root

import golddiff_jax as gd  # pylint: disable=g-import-not-at-top
from golddiff_jax import batches, cli, masks, metrics, outputs, run_config, schedules, stats_cache
from golddiff_jax import workdirs
from experiments import sweep  # pylint: disable=g-import-not-at-top  (its file loader)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Analytical run config (data, options).")
_REFERENCE = flags.DEFINE_string("reference", None, "Reference network checkpoint directory.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 128, "Samples per method (docs/method.md §8.3).",
                                    lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", None, "Samples per batch (default: the config's).",
                              lower_bound=1)
_METHODS = flags.DEFINE_list("methods", list(gd.METHODS), "Analytical methods, in table order.")
_STEPS = flags.DEFINE_integer("num_steps", 10, "DDIM steps.", lower_bound=1, upper_bound=1000)
_OUTPUT = flags.DEFINE_string("output_dir", "workdir/table1", "Directory for the table.")
_SEED = flags.DEFINE_integer("seed", None, "Latent/sampler seed (default: the config's).",
                             lower_bound=0)
_GRID = flags.DEFINE_integer("grid_samples", 8, "Samples per row of samples.png.", lower_bound=1)

GIB = 2.0 ** 30


def method_config(config_spec: str, overrides: dict, method: str, *, num_samples: int,
                  batch_size: int | None, num_steps: int, seed: int | None):
  """The config file (``path[:arg]``) with ``method=<method>`` (and ``mask=<mask>`` for an entry
  ``<method>@<mask>``), the overrides and the sampler fields applied; validated (ValueError names
  the problem)."""
  method, _, mask = method.partition("@")
  if method not in gd.METHODS:
    raise ValueError(f"unknown method {method!r}; valid methods: {sorted(gd.METHODS)}")
  path, _, arg = config_spec.partition(":")
  module = sweep.load_module(path, "table1_config", what="config file")
  replaced = ("method", "mask", "steps") if mask else ("method", "steps")
  items = [i for i in arg.split(",") if i.strip() and i.partition("=")[0].strip() not in replaced]
  items += [f"method={method}"] + ([f"mask={mask}"] if mask else [])
  try:  # ``steps`` in the arg lets the config pick per-step settings (e.g. ELS patch sizes)
    config = module.get_config(",".join(items + [f"steps={num_steps}"]))
  except ValueError:
    try:
      config = module.get_config(",".join(items))
    except ValueError:  # a config file without a ``method`` argument: switch the field only
      if mask:
        raise
      config = module.get_config(arg or None)
      config.method = method
  try:
    config.update_from_flattened_dict({k: v for k, v in overrides.items() if k != "method"})
  except (KeyError, AttributeError, TypeError) as e:
    raise ValueError(f"bad config override: {e}") from e
  config.sampler.num_samples = num_samples
  config.sampler.num_steps = num_steps
  if batch_size is not None:
    config.sampler.batch_size = batch_size
  config.sampler.batch_size = min(config.sampler.batch_size, num_samples)
  if seed is not None:
    config.seed = seed
  run_config.validate(config)
  return config


def _summary(out) -> dict:
  """A method's (or the reference's) samples from the shared batch loop (`golddiff_jax.batches`)
  with its timing and memory as the table reports them."""
  return {
      "images": out.images, "trajectory": out.x0_trajectory,
      "timesteps": [int(t) for t in out.timesteps],
      "timing": {
          "batch_size": out.batch_size, "num_batches": out.num_batches,
          "num_steps": out.num_steps, "wall_seconds": out.wall_seconds,
          "published_style_seconds_per_batch_step": out.published_style_seconds_per_batch_step,
          "step_seconds_median": out.step_seconds_median,
          "compile_seconds": float(out.compile_seconds.sum()),
          "prepare_seconds": out.prepare_seconds,
          "step_seconds": out.step_seconds.tolist(),
      },
      "memory": {"peak_step_bytes": int(out.step_bytes.max()),
                 "step_bytes": out.step_bytes[0].tolist(),
                 "what": "max over steps of XLA's estimate for one compiled step "
                         "(arguments + outputs + temporaries)"},
  }


DATA_FIELDS = ("dataset", "split", "resolution", "subset_size", "class_id", "num_images",
               "data_seed")


def reference_training_data(reference_dir: str, config) -> dict | None:
  """The ``data`` section the reference was trained on (its workdir's config.json) and whether
  it selects the same images as ``config``; None when the workdir has no readable config."""
  folder = os.path.abspath(reference_dir)
  if os.path.basename(folder) == "checkpoints":
    folder = os.path.dirname(folder)
  try:
    with open(os.path.join(folder, "config.json")) as f:
      trained = json.load(f)["data"]
    theirs = ml_collections.ConfigDict({"data": trained})
    same = all(trained.get(k) == config.data.get(k) for k in DATA_FIELDS if k != "resolution")
    same = same and run_config.resolution(theirs) == run_config.resolution(config)
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return {"data": {k: trained.get(k) for k in DATA_FIELDS}, "matches_database": bool(same)}


def mask_density(stats, timesteps, options) -> list[float] | None:
  """Mean number of inputs the locality mask keeps per output coordinate at each timestep (None
  for a method without a mask)."""
  if "mask_threshold" not in options:
    return None
  return [float(np.asarray(masks.mask_for(stats, schedules.alpha_bar(int(t)), options))
                .sum(axis=0).mean()) for t in timesteps]


def _memorization(images: np.ndarray, database) -> dict:
  found = metrics.memorization(images, database)
  return {k: found[k] for k in ("fraction_memorized", "ratio_median", "nearest_distance_mean",
                                "nearest_rms_mean", "threshold")} | {
                                    "ratio": found["ratio"].tolist(),
                                    "nearest_index": found["index"][:, 0].tolist()}


def labelled_rows(rows: list[tuple[str, np.ndarray]], columns: int) -> np.ndarray:
  """One image row per (name, images [n, H, W, C]) with the name on the left, as uint8 RGB
  (zoomed by an integer factor, at least 2, so small images stay visible)."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  grid = outputs.image_grid(np.concatenate([im[:columns] for _, im in rows]), columns=columns)
  if grid.ndim == 2:
    grid = np.repeat(grid[..., None], 3, axis=-1)
  scale = max(2, -(-24 // rows[0][1].shape[1]))  # nearest-neighbour zoom: rows ≥ 24 px tall
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  row_h = grid.shape[0] // len(rows)
  width = 8 + 7 * max(len(name) for name, _ in rows)
  canvas = Image.new("RGB", (width + grid.shape[1], grid.shape[0]), (255, 255, 255))
  canvas.paste(Image.fromarray(grid), (width, 0))
  draw = ImageDraw.Draw(canvas)
  for r, (name, _) in enumerate(rows):
    draw.text((4, 1 + r * row_h + max(0, row_h // 2 - 6)), name, fill=(0, 0, 0))
  return np.asarray(canvas)


def _fmt(value, spec: str) -> str:
  return "—" if value is None else format(value, spec)


def table_rows(results: dict) -> list[dict]:
  rows = []
  for name, r in [*results["methods"].items(), ("reference", results["reference"])]:
    scores = r.get("scores", {})
    rows.append({
        "method": name, "mse": scores.get("mse"), "r2": scores.get("r2"), "l1": scores.get("l1"),
        "seconds_per_step": r["timing"]["published_style_seconds_per_batch_step"],
        "peak_mem_gib": (r["memory"]["peak_step_bytes"] / GIB
                         if r["memory"]["peak_step_bytes"] >= 0 else None),
        "memorized": r["memorization"]["fraction_memorized"],
        "ratio_median": r["memorization"]["ratio_median"],
        "step_seconds_median": r["timing"]["step_seconds_median"],
        "compile_seconds": r["timing"]["compile_seconds"],
        "prepare_seconds": r["timing"]["prepare_seconds"]})
  return rows


def write_tables(output_dir: str, results: dict) -> None:
  rows = table_rows(results)
  s = results["setup"]
  lines = [
      f"# Table 1: {s['dataset']} {'×'.join(map(str, s['image_shape']))}, N={s['num_images']}",
      "",
      f"{s['num_samples']} samples, {s['num_steps']} DDIM steps, batch size {s['batch_size']}, "
      f"seed {s['seed']}; reference `{s['reference']}` (training step "
      f"{s['reference_step']}); backend {s['backend']} ({s['device']}); {s['date']}.",
      ""]
  trained_on = s["reference_training_data"]
  if trained_on is not None and not trained_on["matches_database"]:
    lines += [f"**Note:** the reference was trained on {trained_on['data']}, not on this "
              "database; its memorization row is not against its own training set.", ""]
  lines += [
      "| method | MSE ↓ | r² ↑ | s/step | peak mem (GiB) | L1 | memorized (ρ<1/3) "
      "| median ρ | median step s | compile s | plans s |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['method']} | {_fmt(r['mse'], '.4f')} | {_fmt(r['r2'], '.3f')} | "
        f"{r['seconds_per_step']:.3f} | {_fmt(r['peak_mem_gib'], '.3f')} | "
        f"{_fmt(r['l1'], '.4f')} | {r['memorized']:.3f} | {r['ratio_median']:.3f} | "
        f"{r['step_seconds_median']:.3f} | {r['compile_seconds']:.1f} | "
        f"{r['prepare_seconds']:.2f} |")
  lines += [
      "",
      "MSE, r², L1: final x̂_0 (t = 0) vs the reference network's, both clamp((x+1)/2, 0, 1), "
      "docs/method.md §8.4. s/step: published-style wall time of the whole sampling "
      "(compile included) / (batches × steps) at the stated batch size; median step s "
      "excludes compilation; plans s: building the method's masks and plans, once per run "
      "(in s/step too). Peak mem: max over steps of XLA's estimate for one compiled step (its "
      "arguments incl. database, "
      "statistics and that step's mask, plus outputs and temporaries); other steps' plans and "
      "host memory are not included. Memorized: fraction of samples whose nearest training image "
      "is < 1/3 as far as the second nearest (ρ = d1/d2, unit space); the reference row scores "
      "the network's own samples. samples.png rows, top to bottom: "
      + ", ".join(r["method"] for r in rows) + ".", ""]
  text = "\n".join(lines)
  outputs.atomic_write(os.path.join(output_dir, "table.md"), lambda f: f.write(text), mode="w")
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  outputs.atomic_write(os.path.join(output_dir, "table.csv"),
                       lambda f: f.write(buffer.getvalue()), mode="w")


def make_table(config_spec: str, reference_dir: str, output_dir: str, *, overrides=None,
               methods=None, num_samples: int = 128, batch_size: int | None = None,
               num_steps: int = 10, seed: int | None = None, grid_samples: int = 8) -> dict:
  """Runs the protocol (module docstring) and writes the outputs; returns the results dict."""
  try:
    from golddiff_jax.models import reference  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(f"the reference network module is unavailable: {e}") from e
  methods = list(gd.METHODS) if methods is None else list(methods)
  if not methods or len(set(methods)) != len(methods):
    raise ValueError(f"--methods must name each method once, got {methods}")
  if not reference_dir:
    raise ValueError("--reference (the reference network's checkpoint directory) is required")
  configs = {m: method_config(config_spec, overrides or {}, m, num_samples=num_samples,
                              batch_size=batch_size, num_steps=num_steps, seed=seed)
             for m in methods}
  base = next(iter(configs.values()))
  if len({run_config.stats_key(c) for c in configs.values()}) != 1:
    raise ValueError("the methods' configs select different data; cannot share a reference")
  image_shape = run_config.image_shape(base)
  model = reference.load_reference(reference_dir, image_shape=image_shape)
  trained_on = reference_training_data(reference_dir, base)
  if trained_on is not None and not trained_on["matches_database"]:
    print(f"warning: the reference was trained on {trained_on['data']}, not on this database: "
          "its memorization score is not against its own training set", flush=True)
  output_dir = workdirs.ensure_workdir(output_dir)

  stats, stats_info = stats_cache.for_experiment(base, output_dir)
  noise_key, sample_key = jax.random.split(jax.random.key(base.seed))
  latents = np.asarray(gd.noise(noise_key, num_samples, stats.image_shape))
  batch = base.sampler.batch_size
  print(f"reference: sampling {num_samples} images from {reference_dir}", flush=True)
  ref = _summary(batches.run_batches(
      lambda x, first: reference.sample(model, x, num_steps=num_steps), latents, batch))
  ref["memorization"] = _memorization(ref["images"], stats.database)
  ref["memory"]["process_peak_bytes_after"] = outputs.peak_memory()["bytes"]
  results = {"methods": {}, "reference": {k: v for k, v in ref.items()
                                          if k not in ("images", "trajectory")}}
  images = {}
  for m, config in configs.items():
    options = run_config.method_options(config)
    print(f"{m}: sampling {num_samples} images, options {options}", flush=True)
    out = _summary(batches.sample_method(stats, latents, method=config.method,
                                         num_steps=num_steps, batch=batch, key=sample_key,
                                         **options))
    scores = metrics.trajectory_metrics(out["trajectory"], ref["trajectory"])
    out["memory"]["process_peak_bytes_after"] = outputs.peak_memory()["bytes"]
    results["methods"][m] = {
        "options": options, "scores": scores, "timing": out["timing"], "memory": out["memory"],
        "memorization": _memorization(out["images"], stats.database),
        "mask_inputs_per_output": mask_density(stats, out["timesteps"], options)}
    images[m] = out["images"]
    print(f"{m}: MSE {scores['mse']:.4f} r² {scores['r2']:.3f} s/step "
          f"{out['timing']['published_style_seconds_per_batch_step']:.3f}", flush=True)
  results["setup"] = {
      "dataset": base.data.dataset, "image_shape": list(stats.image_shape),
      "num_images": stats.num_images, "num_samples": num_samples, "batch_size": batch,
      "num_steps": num_steps, "seed": int(base.seed), "timesteps": ref["timesteps"],
      "reference": os.path.abspath(reference_dir), "reference_step": int(model.step),
      "reference_training_data": trained_on, "backend": jax.default_backend(),
      "device": jax.devices()[0].device_kind, "device_count": jax.device_count(),
      "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "stats": stats_info,
      "config": base.to_dict(), "process_peak_memory": outputs.peak_memory()}
  rows = [(m, im) for m, im in images.items()] + [("reference", ref["images"])]
  outputs.write_png(os.path.join(output_dir, "samples.png"),
                    labelled_rows(rows, min(grid_samples, num_samples)))
  write_tables(output_dir, results)
  outputs.write_json(os.path.join(output_dir, "metrics.json"), results)
  return results


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    make_table(
        config_flags.get_config_filename(flags.FLAGS["config"]), _REFERENCE.value,
        _OUTPUT.value, overrides=config_flags.get_override_values(flags.FLAGS["config"]),
        methods=_METHODS.value, num_samples=_NUM_SAMPLES.value, batch_size=_BATCH.value,
        num_steps=_STEPS.value, seed=_SEED.value, grid_samples=_GRID.value)
  except ValueError as e:
    cli.fail(e)
  with open(os.path.join(_OUTPUT.value, "table.md")) as f:
    print(f.read())


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_REFERENCE]))
