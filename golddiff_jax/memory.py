"""The peak memory of one run inside a longer process (a sweep runs many runs in one process).

`outputs.peak_memory` reads the process's high-water mark: the devices' ``peak_bytes_in_use``
(GPU, TPU) or the peak resident set size (CPU). Call `start` when a run begins and `run_peak`
when it ends:

* host RSS: `start` resets the kernel's high-water mark (Linux ``/proc/self/clear_refs``), so the
  peak read at the end is this run's (it includes what the process already held);
* device counters cannot be reset: if the peak rose during the run, the new peak is this run's;
  otherwise the run stayed below an earlier run's peak and XLA's estimate of the run's largest
  compiled step (arguments + outputs + temporaries) is reported instead.
"""

from __future__ import annotations

from golddiff_jax import outputs


def reset_host_peak() -> bool:
  """Resets this process's peak-RSS counter (Linux ≥ 4.0); returns whether it could."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def start() -> dict:
  """What `run_peak` compares against; resets the host counter."""
  return {"host_reset": reset_host_peak(), "before": outputs.peak_memory()}


def run_peak(started: dict, step_bytes=()) -> dict:
  """``{"bytes", "source", ...}``: the peak memory of the run since `start` (see the module
  docstring); ``step_bytes`` are XLA's per-step estimates (-1 where unknown)."""
  now = outputs.peak_memory()
  estimate = max([int(b) for b in step_bytes if int(b) >= 0], default=-1)
  if "per_device_bytes" in now:  # device counters
    if now["bytes"] > started["before"].get("bytes", -1):
      return {**now, "source": now["source"] + ", reached during this run"}
    return {"bytes": estimate, "process_peak_bytes": now["bytes"],
            "source": "XLA's estimate of the run's largest step (the process's device peak "
                      "was reached before this run)"}
  if started["host_reset"]:
    return {**now, "source": "peak RSS during this run (counter reset at its start; includes "
                             "the process's host data)"}
  return now
