"""The batch loop: every sample of a run, batch by batch, from plans built once per run.

Used by the launcher (`golddiff_jax.run`) and by experiments/table1.py (for the analytical methods
and for the trained network alike):

    out = batches.sample_method(stats, latents, method="golddiff", num_steps=10, batch=16,
                                key=sample_key, **options)
    out.images, out.x0_trajectory, out.step_seconds, out.prepare_seconds

Sample i's sampler key is ``fold_in(key, i)`` (`golddiff_jax.sample_keys`), so a sample depends on
its global index and the key only, not on the batch size. Plans are built once per distinct batch
size (`golddiff_jax.prepare`): some plans depend on it (chunk sizes), so a run whose last batch
is smaller prepares that size as well, and every sample is the same as from one
``golddiff_jax.sample(stats, ...)`` call per batch.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from golddiff_jax import api
from golddiff_jax.sampler import SampleOutput


@dataclasses.dataclass(frozen=True)
class Batches(SampleOutput):
  """A run's samples and timings: the `SampleOutput` of every batch, stacked (host NumPy).

  ``images`` [N, H, W, C] and ``x0_trajectory`` [S, N, H, W, C] hold every sample;
  ``step_seconds``, ``compile_seconds`` and ``step_bytes`` are [batches, S];
  ``prepare_seconds`` is the run's plans, built once per run (0 where there are none).

  Attributes:
    batch_size: samples per batch (the last batch may be smaller).
    wall_seconds: the whole sampling: plans, compiles, steps and host copies.
  """
  batch_size: int = 0
  wall_seconds: float = 0.0

  @property
  def num_batches(self) -> int:
    return self.step_seconds.shape[0]

  @property
  def num_steps(self) -> int:
    return self.step_seconds.shape[1]

  @property
  def step_seconds_median(self) -> float:
    return float(np.median(self.step_seconds))

  @property
  def published_style_seconds_per_batch_step(self) -> float:
    """docs/method.md §8.5: whole sampling wall time / (batches × steps), compile included."""
    return self.wall_seconds / (self.num_batches * self.num_steps)


def spans(num: int, batch: int) -> list[tuple[int, int]]:
  """(first sample index, size) of each batch of ``num`` samples in batches of ``batch``."""
  return [(first, min(batch, num - first)) for first in range(0, num, batch)]


def run_batches(sample_batch: Callable[[np.ndarray, int], SampleOutput], latents: np.ndarray,
                batch: int, *, on_batch: Callable[[int, SampleOutput], None] | None = None
                ) -> Batches:
  """Runs ``sample_batch(latents[first:first + size], first)`` over all batches, in order, and
  stacks the outputs; ``on_batch(b, output)`` after batch b. The wall time covers the calls."""
  outs = []
  start = time.perf_counter()
  for b, (first, size) in enumerate(spans(len(latents), batch)):
    outs.append(sample_batch(latents[first:first + size], first))
    if on_batch is not None:
      on_batch(b, outs[-1])
  return Batches(images=np.concatenate([o.images for o in outs]),
                 x0_trajectory=np.concatenate([o.x0_trajectory for o in outs], axis=1),
                 timesteps=outs[0].timesteps,
                 step_seconds=np.stack([o.step_seconds for o in outs]),
                 compile_seconds=np.stack([o.compile_seconds for o in outs]),
                 step_bytes=np.stack([o.step_bytes for o in outs]),
                 batch_size=int(batch), wall_seconds=time.perf_counter() - start,
                 prepare_seconds=float(sum(o.prepare_seconds for o in outs)))


def sample_method(stats, latents: np.ndarray, *, method: str, num_steps: int, batch: int, key,
                  mesh=None, on_step: Callable[[int], None] | None = None,
                  on_batch: Callable[[int, SampleOutput], None] | None = None,
                  **options) -> Batches:
  """Samples all ``latents`` [N, H, W, C] with an analytical method in batches of ``batch``:
  the plans are prepared once per run (per distinct batch size), sample i's randomness is
  ``fold_in(key, i)``. ``on_step(j)`` after each step of each batch, ``on_batch(b, output)`` after
  batch b. The wall time includes the preparation; ``prepare_seconds`` is its total."""
  start = time.perf_counter()
  batch = min(int(batch), len(latents))
  prepared = {}
  for _, size in spans(len(latents), batch):
    if size not in prepared:  # the first (largest) size shards the stats; the rest reuse them
      prepared[size] = api.prepare(stats, method=method, num_steps=num_steps, batch=size,
                                   mesh=mesh, **options)
      stats = prepared[size].stats

  def one(x: np.ndarray, first: int) -> SampleOutput:
    return api.sample(prepared[len(x)], x, key=api.sample_keys(key, first, len(x)),
                      on_step=on_step)

  out = run_batches(one, latents, batch, on_batch=on_batch)
  return dataclasses.replace(out, wall_seconds=time.perf_counter() - start,
                             prepare_seconds=sum(p.prepare_seconds for p in prepared.values()))
