"""golddiff_jax: fast, scalable training-free (analytical) diffusion in JAX.

    import golddiff_jax as gd
    stats = gd.fit(images)                                  # [N, H, W, C] in [-1, 1]
    latents = gd.noise(jax.random.key(7), 16, stats.image_shape)
    out = gd.sample(stats, latents, method="pca_locality", num_steps=10)
    out.images, out.x0_trajectory, out.timesteps, out.step_seconds
    prepared = gd.prepare(stats, method="pca_locality", num_steps=10, batch=16)  # plans once
    out = gd.sample(prepared, latents, key=gd.sample_keys(jax.random.key(8), 0, 16))
"""

from golddiff_jax import diagnostics
from golddiff_jax import sharding
from golddiff_jax.api import (denoise, fit, make_mesh, noise, prepare, sample, sample_keys,
                              shard_stats)
from golddiff_jax.denoisers import METHODS
from golddiff_jax.sampler import Prepared, SampleOutput
from golddiff_jax.stats import Stats, load as load_stats, save as save_stats

__all__ = ["METHODS", "diagnostics", "Prepared", "SampleOutput", "Stats", "denoise", "fit",
           "load_stats", "make_mesh", "noise", "prepare", "sample", "sample_keys", "save_stats",
           "shard_stats", "sharding"]
__version__ = "0.1.0"
