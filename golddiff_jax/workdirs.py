"""A run's working folder: checked writable up front, a previous run's results cleared before a
new run writes, and the run's log file (``log.txt``)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

# What a run writes besides config.json and log.txt; removed when a run starts, metrics.json
# (the "finished" mark) first, so that an interrupted rerun never looks finished.
RESULTS = ("metrics.json", "samples.npz", "grid.png", "trajectory.png", "concentration.png",
           "budgets.png", "step_seconds.png")


def ensure_workdir(workdir: str, what: str = "workdir") -> str:
  """Creates ``workdir`` if needed; raises ValueError unless a file can be written in it."""
  try:
    os.makedirs(workdir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=workdir, prefix=".probe.")
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"{what} {workdir!r} is not writable: {e.strerror or e}") from e
  return os.path.abspath(workdir)


def clear_results(workdir: str) -> None:
  """Removes a previous run's results (`RESULTS`), metrics.json first."""
  for name in RESULTS:
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(workdir, name))


class _QuietFileHandler(logging.FileHandler):
  """A log file handler that drops a record it cannot write (e.g. on a full disk) silently: the
  run's error is reported by the caller, not as a logging traceback."""

  def handleError(self, record):  # noqa: N802 - logging's name
    del record


@contextlib.contextmanager
def log_to(path: str):
  """Sends INFO and up of every logger to the file ``path`` meanwhile; yields the handler."""
  handler = _QuietFileHandler(path, delay=True)
  handler.setLevel(logging.INFO)
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  root = logging.getLogger()
  root.addHandler(handler)
  try:
    yield handler
  finally:
    root.removeHandler(handler)
    handler.close()
