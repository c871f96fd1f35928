"""The console progress bar of a run (tqdm, over sampling steps); log lines that reach the
console meanwhile are printed above it instead of through it."""

from __future__ import annotations

import contextlib
import logging
import sys

import jax


class _BarStream:
  """A console stream that prints through ``tqdm.write``: log lines go above the bar."""

  def __init__(self, stream):
    self.stream = stream

  def write(self, text: str) -> None:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    if text.strip():
      tqdm.write(text.rstrip("\n"), file=self.stream)

  def flush(self) -> None:
    self.stream.flush()


def _console_handlers() -> list[logging.StreamHandler]:
  """The root logger's stream handlers on stdout/stderr (absl's included)."""
  found = []
  for handler in logging.getLogger().handlers:
    handler = getattr(handler, "python_handler", handler)  # absl wraps a StreamHandler
    if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__):
      found.append(handler)
  return found


@contextlib.contextmanager
def bar(total: int, desc: str):
  """A tqdm bar of ``total`` steps (on process 0 only); console log lines are printed above it
  meanwhile."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  progress = tqdm(total=total, unit="step", desc=desc, disable=jax.process_index() != 0,
                  leave=False, file=sys.stderr)
  handlers = [] if progress.disable else _console_handlers()
  streams = [h.stream for h in handlers]
  for handler in handlers:
    handler.setStream(_BarStream(handler.stream))
  try:
    with progress:
      yield progress
  finally:
    for handler, stream in zip(handlers, streams):
      handler.setStream(stream)
