"""The shared inputs of test_multihost.py and its worker processes."""

import jax
import numpy as np

import golddiff_jax as gd
from golddiff_jax.data import procedural_images

N, SHAPE, SPLIT, STEPS = 203, (8, 8, 3), 101, 3
METHODS = {"optimal": {}, "pca_locality": {},
           "golddiff": {"k_min": 20, "k_max": 40, "low_res_dim": 4}}


def images():
  return procedural_images(N, *SHAPE, seed=11)


def latents():
  return np.asarray(gd.noise(jax.random.key(5), 4, SHAPE))
