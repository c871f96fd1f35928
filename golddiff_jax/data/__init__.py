"""Datasets: named TFDS datasets, built-in offline TFDS builders, preprocessing, per-process splits.

    from golddiff_jax import data
    loaded = data.load_images(config.data)    # Loaded(images [N, H, W, C] in [-1, 1], labels)

TensorFlow / TFDS are imported lazily, on the first load.
"""

from golddiff_jax.data.datasets import DATASETS, DatasetSpec, get_spec
from golddiff_jax.data.mnist5k import load_mnist5k
from golddiff_jax.data.procedural import procedural_images
from golddiff_jax.data.tfds_loading import Loaded, load_images, resolution_of

__all__ = ["DATASETS", "DatasetSpec", "Loaded", "get_spec", "load_images", "load_mnist5k",
           "procedural_images", "resolution_of"]
