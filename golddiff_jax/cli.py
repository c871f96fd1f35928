"""Command-line plumbing shared by the absl entry points: every problem is one ``error: ...`` line
on stderr and exit status 2, never a traceback.

    _CONFIG = config_flags.DEFINE_config_file("config", None, "...", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "...")
    app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_WORKDIR],
                                                example="configs/default.py"))
"""

from __future__ import annotations

import sys
import logging
import re
from typing import Callable, NoReturn, Sequence

from absl import flags
import ml_collections


def fail(message) -> NoReturn:
  """Prints ``error: <message>`` (one line; a wrapped error's last line) and exits with 2."""
  lines = [line.strip() for line in str(message).splitlines() if line.strip()]
  if any(line.startswith(("Traceback", "Attempted")) for line in lines):
    lines = lines[-1:]  # a wrapped error: its last line is the cause
  print(f"error: {' '.join(' '.join(lines).split())}", file=sys.stderr)
  sys.exit(2)


def flags_parser(config: flags.FlagHolder, *, required: Sequence[flags.FlagHolder] = (),
                 example: str = "configs/default.py") -> Callable[[list[str]], list[str]]:
  """An absl ``flags_parser`` that loads ``config`` and reports every problem as one line.

  Args:
    config: the ``DEFINE_config_file`` holder; it must be given and must load.
    required: other flags that must be set (non-empty).
    example: a config path quoted in the "--config is required" message.
  """
  def parse(argv):
    argv, nones = _split_none_overrides(argv, config.name)
    try:
      rest = flags.FLAGS(argv)
      if config.value is None:
        fail(f"--{config.name} is required (e.g. --{config.name}={example})")
      if not isinstance(config.value, ml_collections.ConfigDict):
        config.value.keys()  # a config file that failed to load raises its error here
      for path in nones:
        _set_none(config.value, path)
    except (KeyError, AttributeError) as e:
      fail(unknown_field_message(e))
    except OSError as e:
      fail(f"could not load the config file: {e}")
    except Exception as e:  # noqa: BLE001 - flags and config loading raise many types.
      fail(e)
    for holder in required:
      if not holder.value:
        fail(f"--{holder.name} is required")
    return rest

  return parse


# Library loggers whose INFO lines are start-up noise for a user of the launchers (e.g. JAX's
# "Unable to initialize backend 'tpu'" on every machine without a TPU). Warnings still show.
NOISY_LOGGERS = ("jax._src.xla_bridge",)


def quiet_library_logs() -> None:
  """Raises `NOISY_LOGGERS` to WARNING (call before JAX picks its backend)."""
  for name in NOISY_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)


def unknown_field_message(error: BaseException) -> str:
  """One readable line for ml_collections' unknown-field error (a KeyError, possibly wrapped in
  an AttributeError), e.g. ``unknown config field 'kmin' in a --config override (did you mean
  'k_min'?)``."""
  while isinstance(error, AttributeError) and error.args and isinstance(error.args[0],
                                                                        BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  name, _, rest = text.partition("\n")
  locked = re.match(r'Key "([^"]+)" does not exist', name)  # an assignment to a locked config
  name = locked.group(1) if locked else name.strip(chr(34) + chr(39))
  message = f"unknown config field {name!r} in a --config override"
  hint = re.search(r'Did you mean "([^"]+)"', rest)
  return message + (f" (did you mean {hint.group(1)!r}?)" if hint else "")


def config_overrides(argv: Sequence[str], name: str = "config") -> list[str]:
  """The dotted field paths that ``--<name>.a.b=value`` arguments in ``argv`` override."""
  prefix = f"--{name}."
  return [arg[len(prefix):].partition("=")[0] for arg in argv if arg.startswith(prefix)]


def _split_none_overrides(argv: Sequence[str], name: str) -> tuple[list[str], list[str]]:
  """Takes ``--<name>.a.b=None`` out of ``argv`` (ml_collections cannot parse None into a typed
  field) and returns the remaining argv and the dotted paths to set to None after loading."""
  prefix, rest, nones = f"--{name}.", [], []
  for arg in argv:
    path, eq, value = arg.partition("=")
    if arg.startswith(prefix) and eq and value == "None":
      nones.append(path[len(prefix):])
    else:
      rest.append(arg)
  return rest, nones


def _set_none(config: ml_collections.ConfigDict, path: str) -> None:
  """``config.<path> = None`` for an existing field (KeyError naming the field otherwise)."""
  *parents, field = path.split(".")
  node = config
  for parent in parents:
    if not isinstance(node, ml_collections.ConfigDict) or parent not in node:
      raise KeyError(repr(parent))
    node = node[parent]
  if not isinstance(node, ml_collections.ConfigDict) or field not in node:
    raise KeyError(repr(field))
  if isinstance(node[field], ml_collections.ConfigDict):
    raise ValueError(f"--config.{path}=None: {path} is a section, not a field")
  with node.ignore_type():
    node[field] = None
