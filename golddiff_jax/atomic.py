"""Atomic file writes: a temp file beside the target, then ``os.replace``.

An interrupted run therefore never leaves a half-written result (or statistics cache) behind.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
  """Calls ``write(file)`` on a temp file beside ``path``, then renames it to ``path``."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual file mode
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and e.filename is None and e.errno is not None:
      raise OSError(e.errno, e.strerror, path) from e  # e.g. a full disk: say which file
    raise
