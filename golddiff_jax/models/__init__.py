"""The reference denoiser (docs/method.md §8.1): a Flax DDPM U-Net, its optax training and
checkpoints.

    from golddiff_jax.models import reference
    model = reference.load_reference("workdir/reference_default")   # EMA weights, latest step
    out = reference.sample(model, latents, num_steps=10)             # same DDIM as the sampler

Modules: `unet` (the network), `train` (``train(config, workdir)``), `checkpoint` (orbax
checkpoints with arch metadata), `reference` (loading, x̂_0 prediction, DDIM sampling).
Imported lazily: ``import golddiff_jax`` does not pull in flax, optax or orbax.
"""
