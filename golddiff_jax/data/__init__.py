"""Datasets: procedurally generated offline images (and, later, TFDS loaders)."""

from golddiff_jax.data.procedural import procedural_images

__all__ = ["procedural_images"]
