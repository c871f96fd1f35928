"""Command-line plumbing shared by the absl entry points: every problem is one ``error: ...`` line
on stderr and exit status 2, never a traceback.

    _CONFIG = config_flags.DEFINE_config_file("config", None, "...", lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "...")
    app.run(main, flags_parser=cli.flags_parser(_CONFIG, required=[_WORKDIR],
                                                example="configs/default.py"))
"""

from __future__ import annotations

import sys
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
    try:
      rest = flags.FLAGS(argv)
      if config.value is None:
        fail(f"--{config.name} is required (e.g. --{config.name}={example})")
      if not isinstance(config.value, ml_collections.ConfigDict):
        config.value.keys()  # a config file that failed to load raises its error here
    except (KeyError, AttributeError) as e:
      fail(f"unknown config field {str(e).strip(chr(34) + chr(39))!r} in a --config override")
    except OSError as e:
      fail(f"could not load the config file: {e}")
    except Exception as e:  # noqa: BLE001 - flags and config loading raise many types.
      fail(e)
    for holder in required:
      if not holder.value:
        fail(f"--{holder.name} is required")
    return rest

  return parse
