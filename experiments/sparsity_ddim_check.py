r"""Does DDIM break on a short-trained digits U-Net because of the sample clip? (docs/sparsity.md)

  python experiments/sparsity_ddim_check.py --workdir=workdir/sparsity_ddim_check

Trains a small U-Net on the real digits (configs/sparsity/digits.py with ch 16, batch 32,
800 steps, 64 samples; about 40 minutes on 2 busy CPU cores), samples it with DDPM and DDIM at
K = 50 and 1000 through `golddiff_jax.sparsity.digits.run`, then runs DDIM at the largest K once more
without the clip of x̂_0 (the update x_prev = √ᾱ_prev·x̂_0 + √(1 − ᾱ_prev)·ε̂ with x̂_0 as the
network gives it) from the same latents, and prints SW2, background energy and ink fraction of
each.
"""

import os
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from configs.sparsity import digits as digits_config  # noqa: E402  pylint: disable=g-import-not-at-top
from golddiff_jax.models import train  # noqa: E402
from golddiff_jax.sparsity import digits, samplers  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.", required=True)
_SMOKE = flags.DEFINE_bool("smoke", False, "A seconds-long run of the same code (tiny network, "
                           "5 steps, 8 samples, K = 2 and 3) to check the script itself.")


def _line(name: str, rec: dict) -> str:
  return (f"{name}: sw2 {rec['sw2']:.3f}, background energy {rec['background_energy']:.2f}, "
          f"ink fraction {rec['ink_fraction']:.3f}")


def main(argv):
  del argv
  config = digits_config.get_config("ch=16,batch=32,steps=800,samples=64")
  config.eval.ks = (50, 1000)
  if _SMOKE.value:
    config = digits_config.get_config("ch=8,batch=8,steps=5,samples=8")
    config.model.update({"ch_mult": (1,), "num_res_blocks": 1, "num_groups": 4})
    config.eval.update({"ks": (2, 3), "keep": 4})
  config.eval.samplers = ("ddim", "ddpm")
  result = digits.run(config, _WORKDIR.value)
  for rec in result["records"]:
    print(_line(f"{rec['sampler']} K={rec['k']}", rec))

  x_train, x_test, y_train, _ = digits.load_split(int(config.data.n_test))
  params = train.restore_params(config, _WORKDIR.value, x_train.shape[1:], "ema_params")
  eps_fn = samplers.network_eps(train.build_model(train.arch_of(config)))
  n = int(config.eval.num_samples)
  k_lat, _ = jax.random.split(jax.random.fold_in(jax.random.key(int(config.seed)), 7))
  latents = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_lat, i),
                                                 x_train.shape[1:]))(jnp.arange(n))
  k_max = int(config.eval.ks[-1])
  sched = {k: jnp.asarray(v, jnp.int32 if k == "t" else jnp.float32)
           for k, v in samplers.respaced_schedule(k_max).items()}

  @jax.jit
  def ddim_unclipped(x):
    def body(x, s):
      eps = eps_fn(params, x, jnp.full((x.shape[0],), s["t"], jnp.int32))
      x0 = (x - jnp.sqrt(1 - s["abar"]) * eps) / jnp.sqrt(s["abar"])
      return jnp.sqrt(s["abar_prev"]) * x0 + jnp.sqrt(1 - s["abar_prev"]) * eps, None
    return jax.lax.scan(body, x, sched)[0]

  x = np.asarray(ddim_unclipped(latents))
  rec = digits.score(x, x_test, x_train, y_train, num_directions=256, seed=int(config.seed))
  print(_line(f"ddim K={k_max} without the clip", rec))


if __name__ == "__main__":
  app.run(main)
