"""The denoiser contract and the registry of methods.

A method is one module. It declares its options as one frozen dataclass (a subclass of
`Options`: every field with its default, its documentation and its range checks, run when an
instance is made), and calls `register` with what it provides:

* ``prepare_run(stats, abars, options, batch) -> [plan]`` (host, once per run: every step's plan,
  sharing work across steps), or ``prepare(stats, abar, options, batch) -> plan`` per step; a plan
  is a pytree with a field ``abar`` (ᾱ_t, which the sampler's DDIM update reads);
* ``apply(stats, plan, x_t [B, D], key) -> x̂_0 [B, D]``: pure and jit-able;
* optionally ``apply_sharded(stats, plan, x_t, key, mesh)``, ``plan_specs(plan)`` and
  ``check_mesh_options(options)`` (defaults below).

The registry (`REGISTRY`, also exported as ``golddiff_jax.METHODS``) maps a method's name to its
`Denoiser`. The public API, the sampler and the config validation look methods up here only;
the config sections ``denoiser`` and ``golden`` are generated from the registered options
(docs/architecture.md, "Denoisers and their options").
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import typing
from typing import Any, Callable, Iterator, Mapping, Sequence

from golddiff_jax import sharding, validation

SECTIONS = ("denoiser", "golden")  # the config sections an option can live in

_QUALIFY: contextvars.ContextVar[Callable[[str], str] | None] = contextvars.ContextVar(
    "option_names", default=None)


def option(default: Any, doc: str, *, section: str = "denoiser") -> Any:
  """An options-dataclass field: its default, its one-paragraph documentation (the option
  reference, docs/options.md, is generated from it) and the config section it lives in."""
  if section not in SECTIONS:
    raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
  return dataclasses.field(default=default, metadata={"doc": doc, "section": section})


def name(field: str) -> str:
  """How option ``field`` is named in an error message: ``field`` from the API, and
  ``section.field`` while a config is validated (`Denoiser.options` with ``qualify``)."""
  qualify = _QUALIFY.get()
  return field if qualify is None else qualify(field)


@dataclasses.dataclass(frozen=True)
class Options:
  """Base of every method's options dataclass: making an instance runs its `check`, so an
  instance always holds valid values."""

  def __post_init__(self):
    self.check()

  def check(self) -> None:
    """Raises ValueError (one line, naming the option with `name`) for a bad value. Subclasses
    that extend another options class call ``super().check()``."""

  def replace(self, **changes) -> "Options":
    return dataclasses.replace(self, **changes)


def redefault(options_type: type, field: str, default: Any) -> Any:
  """Field ``field`` of ``options_type`` with another default (same documentation and section),
  for a method that extends another method's options with its own setting."""
  parent = {f.name: f for f in dataclasses.fields(options_type)}[field]
  return dataclasses.field(default=default, metadata=parent.metadata)


@dataclasses.dataclass(frozen=True)
class TemperatureOptions(Options):
  """The softmax temperature, shared by every softmax-based method."""
  temperature: float = option(
      1.0, "Softmax temperature T > 0: the logits are divided by T (1 = the posterior).")

  def check(self) -> None:
    super().check()
    validation.check_temperature(self.temperature, name=name("temperature"))


def fields(options_type: type) -> tuple[dataclasses.Field, ...]:
  return dataclasses.fields(options_type)


def section(field: dataclasses.Field) -> str:
  return field.metadata.get("section", "denoiser")


def doc(field: dataclasses.Field) -> str:
  return field.metadata.get("doc", "")


def value_type(options_type: type, field: str) -> type:
  """The field's type for a config (ml_collections) field: int, float, str or bool when the
  annotation is one of them (optionally ``| None``), else ``object``."""
  hint = typing.get_type_hints(options_type)[field]
  kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
  if len(kinds) == 1 and kinds[0] in (int, float, str, bool):
    return kinds[0]
  return object


# ---- the contract -----------------------------------------------------------------------------

def replicated_apply(apply: Callable) -> Callable:
  """The default ``apply_sharded``: ``apply`` on the mesh-placed arguments, partitioned by the
  compiler. Right for a method that does not scan the database rows (on a mesh they are padded at
  the end to a multiple of the ``data`` axis); a method that does provides its own."""
  def apply_sharded(stats, plan, x_t, key, mesh):
    del mesh
    return apply(stats, plan, x_t, key)
  return apply_sharded


def no_mesh_restrictions(options: Options) -> None:
  """The default ``check_mesh_options``: every option value runs on a mesh."""
  del options


@dataclasses.dataclass(frozen=True)
class Denoiser:
  """A registered method: its name, options type and hooks (see the module docstring)."""
  name: str
  Options: type
  prepare_run: Callable[..., list]
  apply: Callable
  apply_sharded: Callable
  plan_specs: Callable
  check_mesh_options: Callable[[Options], None]

  @property
  def option_names(self) -> tuple[str, ...]:
    return tuple(f.name for f in fields(self.Options))

  def options(self, overrides: Mapping[str, Any] | None = None, *,
              qualify: Callable[[str], str] | None = None) -> Options:
    """The method's options with ``overrides`` applied, checked (ValueError for an unknown name or
    a bad value). ``qualify`` renames fields in the messages (e.g. ``golden.k_min``)."""
    overrides = dict(overrides or {})
    validation.check_options(overrides, self.option_names, what=f"method {self.name!r}")
    token = _QUALIFY.set(qualify)
    try:
      return self.Options(**overrides)
    finally:
      _QUALIFY.reset(token)

  def replace(self, **hooks) -> "Denoiser":
    """A copy with some hooks replaced (e.g. a test's instrumented ``apply``)."""
    return dataclasses.replace(self, **hooks)

  def prepare(self, stats, abar: float, options: Options, batch: int):
    """One step's plan (`prepare_run` for a single ᾱ)."""
    return self.prepare_run(stats, [abar], options, batch)[0]


REGISTRY: dict[str, Denoiser] = {}


def register(name: str, *, options: type, apply: Callable,
             prepare: Callable | None = None, prepare_run: Callable | None = None,
             apply_sharded: Callable | None = None, plan_specs: Callable | None = None,
             check_mesh_options: Callable | None = None) -> Denoiser:
  """Adds a method to `REGISTRY` (called by the method's own module) and returns its `Denoiser`.

  Give ``prepare_run`` or per-step ``prepare``. Defaults: ``apply_sharded`` = `replicated_apply`,
  ``plan_specs`` = every plan leaf replicated, ``check_mesh_options`` = no restrictions.
  """
  if name in REGISTRY:
    raise ValueError(f"method {name!r} is already registered")
  if not (isinstance(options, type) and issubclass(options, Options)
          and dataclasses.is_dataclass(options)):
    raise TypeError(f"{name}: options must be a dataclass subclass of denoisers.base.Options")
  if (prepare is None) == (prepare_run is None):
    raise TypeError(f"{name}: give exactly one of prepare and prepare_run")
  if prepare_run is None:
    def prepare_run(stats, abars: Sequence[float], options, batch: int) -> list:
      return [prepare(stats, abar, options, batch) for abar in abars]
  denoiser = Denoiser(
      name=name, Options=options, prepare_run=prepare_run, apply=apply,
      apply_sharded=apply_sharded or replicated_apply(apply),
      plan_specs=plan_specs or sharding.replicated_specs,
      check_mesh_options=check_mesh_options or no_mesh_restrictions)
  REGISTRY[name] = denoiser
  return denoiser


def unregister(name: str) -> None:
  """Removes a method (for tests and notebooks that register their own)."""
  REGISTRY.pop(name, None)


@contextlib.contextmanager
def registered(name: str, **hooks) -> Iterator[Denoiser]:
  """`register` for the duration of a ``with`` block."""
  denoiser = register(name, **hooks)
  try:
    yield denoiser
  finally:
    unregister(name)


def get(name: str) -> Denoiser:
  """The registered method ``name``, else ValueError listing the valid ones."""
  if not isinstance(name, str) or name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid methods: {sorted(REGISTRY)}")
  return REGISTRY[name]
