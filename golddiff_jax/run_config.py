"""Run configs (``configs/*.py``): up-front validation, method options, the stats cache key.

`validate` checks a whole config before a run touches its workdir or loads data and raises
ValueError naming the field. The method's options are checked by its options dataclass
(`golddiff_jax.denoisers.base`), with the config's field names (``golden.k_min``), so a bad option
fails here rather than after the data is loaded.

The ``denoiser`` and ``golden`` sections are generated from the registered methods' options
(`option_sections`): every option of every method, each None ("the method's default") until a
config file or an override sets it. A config may carry settings for several methods (Table 1
runs them all from one config); `method_options` takes the chosen method's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import re

import ml_collections
from ml_collections import config_dict

from golddiff_jax import budgets
from golddiff_jax.data import datasets
from golddiff_jax.denoisers import base, golddiff

STATS_SOURCES = ("database", "global")
_SECTIONS = ("data", "stats", "denoiser", "golden", "sampler", "mesh", "output", "diagnostics")


def _int(name: str, value, *, minimum: int | None = None, optional: bool = False) -> None:
  if value is None and optional:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
  if minimum is not None and value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")


def option_sections() -> dict[str, ml_collections.ConfigDict]:
  """The ``denoiser`` and ``golden`` config sections: one field per option name of the registered
  methods (`base.option` says which section), typed as its dataclass field and None (the chosen
  method's default) until set. A method registered later adds its options here by itself."""
  sections = {name: ml_collections.ConfigDict() for name in base.SECTIONS}
  for denoiser in base.REGISTRY.values():
    for field in base.fields(denoiser.Options):
      section = sections[base.section(field)]
      if field.name not in section:
        section[field.name] = config_dict.FieldReference(
            None, field_type=base.value_type(denoiser.Options, field.name))
  return sections


def _field_names(denoiser: base.Denoiser) -> dict[str, str]:
  """Option name → its config path (``section.name``)."""
  return {f.name: f"{base.section(f)}.{f.name}" for f in base.fields(denoiser.Options)}


def _set_values(config, paths: dict[str, str]) -> dict:
  """The options among ``paths`` (name → ``section.name``) that ``config`` sets (not None)."""
  values = {}
  for name, path in paths.items():
    section, _ = path.split(".")
    value = config[section].get(name) if section in config else None
    if value is not None:
      values[name] = value
  return values


def options(config) -> base.Options:
  """``config.method``'s checked options: its fields that the config sets, defaults for the rest.
  ValueError names the config field (``golden.k_min must be ...``)."""
  denoiser = base.get(config.method)
  paths = _field_names(denoiser)
  return denoiser.options(_set_values(config, paths), qualify=paths.__getitem__)


def check_other_settings(config) -> None:
  """Checks the options ``config`` sets for methods other than ``config.method`` (a config may
  carry them, e.g. for Table 1's other rows): each such value must be valid for some registered
  method that has the option, else the ValueError of the first one that rejects it."""
  chosen = base.get(config.method)
  own = set(chosen.option_names)
  accepted, errors = set(), {}
  for denoiser in base.REGISTRY.values():
    paths = _field_names(denoiser)
    values = _set_values(config, {k: v for k, v in paths.items() if k not in own})
    if not values:
      continue
    try:
      denoiser.options(values, qualify=paths.__getitem__)
      accepted |= set(values)
      continue
    except ValueError as e:
      joint = e
    # Rejected: blame the values that fail on their own (all of them for a joint rule).
    alone = {}
    for name, value in values.items():
      try:
        denoiser.options({name: value}, qualify=paths.__getitem__)
      except ValueError as e:
        alone[name] = e
    for name in values:
      if alone and name not in alone:
        accepted.add(name)
      else:
        errors.setdefault(name, alone.get(name, joint))
  for name, error in errors.items():
    if name not in accepted:
      raise error


def check_overrides(config, paths) -> None:
  """Raises ValueError for a command-line override (dotted ``paths``, e.g. ``denoiser.patch_size``)
  of an option that ``config.method`` does not have: on the command line such a setting would
  otherwise be ignored without a word."""
  denoiser = base.get(config.method)
  own = set(_field_names(denoiser).values())
  for path in paths:
    section, _, name = path.partition(".")
    if section in base.SECTIONS and name and path not in own:
      raise ValueError(f"--config.{path}: method {denoiser.name!r} has no option {name!r} "
                       f"(its options: {list(denoiser.option_names)}; docs/options.md)")


def method_options(config) -> dict:
  """`options` as a dict (every option of ``config.method``, defaults filled in): the keyword
  arguments `golddiff_jax.sample` takes."""
  return dataclasses.asdict(options(config))


def resolution(config) -> int:
  return int(config.data.resolution or datasets.get_spec(config.data.dataset).shape[0])


def image_shape(config) -> tuple[int, int, int]:
  spec = datasets.get_spec(config.data.dataset)
  if spec.is_points:
    return spec.shape
  return (resolution(config), resolution(config), spec.shape[2])


def _validate_data(data) -> datasets.DatasetSpec:
  spec = datasets.get_spec(data.dataset)
  if not isinstance(data.split, str) or not data.split:
    raise ValueError(f"data.split must be a non-empty string, got {data.split!r}")
  base = re.split(r"[\[+]", data.split)[0]
  if base not in spec.splits:
    raise ValueError(f"data.split {data.split!r}: dataset {spec.name!r} has splits "
                     f"{list(spec.splits)}")
  _int("data.resolution", data.resolution, minimum=1, optional=True)
  if spec.is_points and data.resolution not in (None, 1):
    raise ValueError(f"data.resolution must be unset for the point dataset {spec.name!r}")
  _int("data.subset_size", data.subset_size, minimum=2, optional=True)
  _int("data.class_id", data.class_id, minimum=0, optional=True)
  if data.class_id is not None and data.class_id >= spec.num_classes:
    raise ValueError(f"data.class_id={data.class_id}: dataset {spec.name!r} has "
                     f"{spec.num_classes or 'no'} classes")
  _int("data.num_images", data.num_images, minimum=2)
  _int("data.data_seed", data.data_seed, minimum=0)
  for name in ("data_dir", "manual_dir"):
    if data[name] is not None and not isinstance(data[name], str):
      raise ValueError(f"data.{name} must be a path string or None, got {data[name]!r}")
  return spec


def database_size(config) -> int | None:
  """N when it is known without loading data (a built-in dataset, or a subset of a split that
  holds at least that many images), else None."""
  data = config.data
  if data.class_id is not None:
    return None
  if datasets.get_spec(data.dataset).builtin:
    return min(data.num_images, data.subset_size or data.num_images)
  return data.subset_size


def _validate_method(config, spec: datasets.DatasetSpec) -> None:
  checked = options(config)  # the unknown-method and option checks
  check_other_settings(config)
  if not isinstance(checked, golddiff.RetrievalOptions):
    return
  # What depends on the data: the proxy resolution and, when N is known, the budgets.
  if checked.low_res_dim > resolution(config) and not spec.is_points:
    raise ValueError(f"golden.low_res_dim={checked.low_res_dim} exceeds the image resolution "
                     f"{resolution(config)} (0 picks the proxy resolution automatically)")
  n = database_size(config)
  if n is not None:
    bounds = budgets.resolve_budgets(n, checked.k_min, checked.k_max)
    budgets.check_ablation_options(bounds, dynamic_m=checked.dynamic_m,
                                   dynamic_k=checked.dynamic_k, static_m=checked.static_m,
                                   static_k=checked.static_k)


def validate(config) -> None:
  """Raises ValueError (naming the field) if ``config`` cannot run; returns None otherwise."""
  missing = [s for s in _SECTIONS if s not in config]
  if missing:
    raise ValueError(f"config lacks section(s) {missing}")
  _int("seed", config.seed, minimum=0)
  spec = _validate_data(config.data)
  _int("stats.chunk_size", config.stats.chunk_size, minimum=1)
  if config.stats.source not in STATS_SOURCES:
    raise ValueError(f"stats.source must be one of {STATS_SOURCES}, got {config.stats.source!r}")
  _int("stats.global_subset_size", config.stats.global_subset_size, minimum=2)
  if config.stats.get("cache_dir") is not None and not isinstance(config.stats.cache_dir, str):
    raise ValueError(f"stats.cache_dir must be a path string or None, got "
                     f"{config.stats.cache_dir!r}")
  sampler = config.sampler
  _int("sampler.num_steps", sampler.num_steps, minimum=1)
  if sampler.num_steps > 1000:
    raise ValueError(f"sampler.num_steps must be <= 1000, got {sampler.num_steps}")
  _int("sampler.num_samples", sampler.num_samples, minimum=1)
  _int("sampler.batch_size", sampler.batch_size, minimum=1)
  _int("mesh.data", config.mesh.data, minimum=-1)
  if config.mesh.data == 0:
    raise ValueError("mesh.data must be -1 (all devices) or a positive device count, got 0")
  _int("mesh.batch", config.mesh.batch, minimum=1)
  if not isinstance(config.mesh.distributed, bool):
    raise ValueError(f"mesh.distributed must be a bool, got {config.mesh.distributed!r}")
  for name in ("batch_size", "num_samples"):
    if sampler[name] % config.mesh.batch:
      raise ValueError(f"sampler.{name}={sampler[name]} must be a multiple of "
                       f"mesh.batch={config.mesh.batch} (queries are split over it)")
  _int("output.grid_samples", config.output.grid_samples, minimum=1)
  _int("output.trajectory_samples", config.output.trajectory_samples, minimum=1)
  _int("diagnostics.num_samples", config.diagnostics.num_samples, minimum=0)
  if not 0.0 < config.diagnostics.mass <= 1.0:
    raise ValueError(f"diagnostics.mass must be in (0, 1], got {config.diagnostics.mass!r}")
  _validate_method(config, spec)


def fingerprint(config) -> str:
  """A short hash of the whole config (its JSON form): a run's outputs carry it, so results can
  be matched to the config that produced them."""
  from golddiff_jax import outputs  # pylint: disable=g-import-not-at-top (PIL: only here)
  text = json.dumps(outputs.jsonable(config.to_dict()), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def stats_source(config) -> dict:
  """What the statistics of ``config`` are fitted from (stored in, and checked against, each
  cached stats file)."""
  data = config.data
  spec = datasets.get_spec(data.dataset)
  source = {"dataset": data.dataset, "split": data.split, "resolution": resolution(config),
            "subset_size": data.subset_size, "class_id": data.class_id,
            "stats_source": config.stats.source}
  if spec.builtin:
    source.update(num_images=data.num_images, data_seed=data.data_seed)
  if config.stats.source == "global":
    source["global_subset_size"] = config.stats.global_subset_size
  return source


def stats_key(config) -> str:
  """File name of the cached statistics: dataset, split, resolution, subset, class, source."""
  data = config.data
  spec = datasets.get_spec(data.dataset)
  parts = [data.dataset, data.split, f"r{resolution(config)}",
           f"n{data.subset_size or 'all'}",
           f"class{'all' if data.class_id is None else data.class_id}"]
  if spec.builtin:
    parts.append(f"gen{data.num_images}s{data.data_seed}")
  if config.stats.source == "global":
    parts.append(f"global{config.stats.global_subset_size}")
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts)) + ".npz"
