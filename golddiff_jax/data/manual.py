"""TFDS builders for the datasets TFDS cannot download: CelebA-HQ, AFHQv2 and ImageNet 64×64.

Each reads files the user put in a manual folder (``config.data.manual_dir``; TFDS's default is
``<data_dir>/downloads/manual``) once, and writes a normal TFDS dataset to ``data_dir``. Later
runs read the prepared dataset. Images are resized at preparation time with PIL bilinear, which
antialiases when downscaling: exactly what torchvision ``Resize`` does on PIL images
(docs/method.md §2.6). Examples keep the file order (``disable_shuffling``): sorted paths, as
torchvision's ImageFolder.

A missing or empty folder raises `ManualDataError` (a ValueError) that says what to download and
where to put it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from golddiff_jax.data import datasets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ManualDataError(ValueError):
  """The manual-download folder of a dataset is missing or holds no usable files."""


@dataclasses.dataclass(eq=False)
class ResolutionConfig(tfds.core.BuilderConfig):
  resolution: int = 64


def _resolution_configs(resolutions) -> list[ResolutionConfig]:
  return [ResolutionConfig(name=str(r), version="1.0.0", resolution=r) for r in resolutions]


def manual_folder(dl_manager, spec: datasets.DatasetSpec) -> str:
  """The manual folder of ``spec``'s builder, or ManualDataError with the download instructions."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except AssertionError as e:  # TFDS: "Manual directory ... does not exist or is empty."
    raise ManualDataError(f"dataset {spec.name!r} needs a manual download, and its manual folder "
                          f"is missing or empty: {spec.manual_instructions}") from e


def _files(folder: str, suffixes: tuple[str, ...]) -> list[str]:
  found = []
  for root, dirs, names in os.walk(folder):
    dirs.sort()
    found += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(suffixes)]
  return found


def load_resized(path: str, resolution: int) -> np.ndarray:
  """An RGB uint8 image [r, r, 3], resized (if needed) with PIL bilinear + antialias."""
  with Image.open(path) as image:
    image = image.convert("RGB")
    if image.size != (resolution, resolution):
      image = image.resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(image, np.uint8)


def _image_features(resolution: int, labels=None) -> tfds.features.FeaturesDict:
  features = {"image": tfds.features.Image(shape=(resolution, resolution, 3))}
  if labels is not None:
    features["label"] = tfds.features.ClassLabel(**labels)
  return tfds.features.FeaturesDict(features)


class GolddiffCelebahq(tfds.core.GeneratorBasedBuilder):
  """CelebA-HQ from a local folder of images, resized to the config's resolution."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = datasets.CELEBAHQ_INSTRUCTIONS
  BUILDER_CONFIGS = _resolution_configs(datasets.DATASETS["celebahq"].resolutions)
  DEFAULT_BUILDER_CONFIG_NAME = "64"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description="CelebA-HQ (manual download).",
                                 features=_image_features(self.builder_config.resolution),
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    spec = datasets.DATASETS["celebahq"]
    files = _files(manual_folder(dl_manager, spec), IMAGE_SUFFIXES)
    if not files:
      raise ManualDataError(f"no images for 'celebahq' in the manual folder: "
                            f"{spec.manual_instructions}")
    return {"train": self._generate_examples(files)}

  def _generate_examples(self, files):
    for i, path in enumerate(files):
      yield i, {"image": load_resized(path, self.builder_config.resolution)}


class GolddiffAfhq(tfds.core.GeneratorBasedBuilder):
  """AFHQv2 train split (cat, dog, wild) from a local folder, resized to the config's resolution."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = datasets.AFHQ_INSTRUCTIONS
  BUILDER_CONFIGS = _resolution_configs(datasets.DATASETS["afhq"].resolutions)
  DEFAULT_BUILDER_CONFIG_NAME = "64"
  CLASSES = ("cat", "dog", "wild")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description="AFHQv2 train split (manual download).",
        features=_image_features(self.builder_config.resolution, {"names": list(self.CLASSES)}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    spec = datasets.DATASETS["afhq"]
    folder = manual_folder(dl_manager, spec)
    train = os.path.join(folder, "train")
    present = [c for c in self.CLASSES if os.path.isdir(os.path.join(train, c))]
    if not present:
      raise ManualDataError(f"no train/{{cat,dog,wild}} folders for 'afhq' in the manual folder: "
                            f"{spec.manual_instructions}")
    items = [(path, self.CLASSES.index(c)) for c in present
             for path in _files(os.path.join(train, c), IMAGE_SUFFIXES)]
    return {"train": self._generate_examples(items)}

  def _generate_examples(self, items):
    for i, (path, label) in enumerate(items):
      yield i, {"image": load_resized(path, self.builder_config.resolution), "label": label}


class GolddiffImagenet64(tfds.core.GeneratorBasedBuilder):
  """ImageNet-1K train at 64×64 from the official downsampled npz batches (labels 0…999)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = datasets.IMAGENET64_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description="Downsampled ImageNet 64x64 train split (manual download).",
        features=_image_features(64, {"num_classes": 1000}), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    spec = datasets.DATASETS["imagenet64"]
    batches = [p for p in _files(manual_folder(dl_manager, spec), (".npz",))
               if re.fullmatch(r"train_data_batch_\d+\.npz", os.path.basename(p))]
    if not batches:
      raise ManualDataError(f"no train_data_batch_*.npz files for 'imagenet64' in the manual "
                            f"folder: {spec.manual_instructions}")
    batches.sort(key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[-1]))
    return {"train": self._generate_examples(batches)}

  def _generate_examples(self, batches):
    index = 0
    for path in batches:
      with np.load(path, allow_pickle=False) as data:
        images = data["data"].reshape(-1, 3, 64, 64).transpose(0, 2, 3, 1)  # CHW rows → HWC
        labels = data["labels"]
        for image, label in zip(images, labels):
          yield index, {"image": image, "label": int(label) - 1}
          index += 1
