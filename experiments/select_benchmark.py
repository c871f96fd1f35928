r"""Recall and speed of the top-k strategies of `golddiff_jax.select`, side by side in one process.

  python experiments/select_benchmark.py --num_scores=50000 --batch=16 --ks=250,2500,5000

For each k and method: recall of the returned indices against the exact k smallest (random float32
scores with deliberate ties: values are rounded to 1e-3), median seconds over repeats after
compilation, and compile seconds.
"""

import functools
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from golddiff_jax import select

_N = flags.DEFINE_integer("num_scores", 50000, "Scores per row (N).")
_BATCH = flags.DEFINE_integer("batch", 16, "Rows.")
_KS = flags.DEFINE_list("ks", ["250", "2500", "5000"], "k values.")
_METHODS = flags.DEFINE_list("methods", list(select.METHODS), "Methods.")
_RECALL = flags.DEFINE_float("recall_target", 0.95, "Target recall for approx and bucket.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats.")


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  scores = jnp.asarray(np.round(rng.random((_BATCH.value, _N.value)), 3), jnp.float32)
  print(f"# {time.strftime('%Y-%m-%d')} backend={jax.default_backend()} "
        f"B={_BATCH.value} N={_N.value} recall_target={_RECALL.value} (scores with ties)")
  print("| k | method | recall | median ms | compile s |")
  print("|---|---|---|---|---|")
  for k in (int(k) for k in _KS.value):
    exact = np.sort(np.asarray(scores), axis=1)[:, k - 1:k]  # k-th smallest value per row
    for method in _METHODS.value:
      fn = jax.jit(functools.partial(select.select, k=k, method=method,
                                     recall_target=_RECALL.value))
      start = time.perf_counter()
      compiled = fn.lower(scores).compile()
      compile_s = time.perf_counter() - start
      times = []
      for _ in range(_REPEATS.value):
        start = time.perf_counter()
        values, _ = jax.block_until_ready(compiled(scores))
        times.append(time.perf_counter() - start)
      # With ties, any index whose value is <= the k-th smallest is a correct member.
      recall = float(np.mean(np.asarray(values) <= exact))
      print(f"| {k} | {method} | {recall:.4f} | {1e3 * np.median(times):.1f} | {compile_s:.2f} |",
            flush=True)


if __name__ == "__main__":
  app.run(main)
