"""Loads a named dataset (see `datasets.DATASETS`) through TFDS into model-space NumPy arrays.

Every dataset, built-in ones included, is a TFDS builder, so one path serves all of them:

1. build the builder (the built-ins get a builder config from ``num_images``/``resolution``/
   ``data_seed``; the manual ones pick the stored resolution);
2. prepare it if needed (the built-ins generate offline; TFDS datasets download; manual datasets
   read ``manual_dir``), turning failures into a one-line-able ValueError;
3. read this process's slice (`tfds.split_for_jax_process`) in dataset order (no shuffling, one
   file at a time), filter by class, preprocess (docs/method.md §2.6);
4. all-gather the slices so every process holds the database in dataset order, then cut to
   ``subset_size``.

TensorFlow is imported here only, lazily (``import golddiff_jax`` stays light), and is told not to
use the GPUs, which belong to JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import socket
import sys
from typing import Any, Callable

import numpy as np

from golddiff_jax.data import datasets

_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A loaded dataset: ``images`` [N, H, W, C] float32 in [−1, 1] (dataset order) and ``labels``
  [N] int64 (or None when the dataset has no labels)."""
  images: np.ndarray
  labels: np.ndarray | None


@contextlib.contextmanager
def _native_stderr_hidden():
  """Hides what native code writes to file descriptor 2 meanwhile (TensorFlow's C++ start-up
  lines, which ignore TF_CPP_MIN_LOG_LEVEL). Python exceptions still propagate and are shown."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no file descriptor 2 (some notebooks)
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


_QUIETED = []


def _import_tfds():
  if not _QUIETED:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
    with _native_stderr_hidden():
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      tf.config.set_visible_devices([], "GPU")  # TF must not grab accelerator memory from JAX.
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    _QUIETED.append(True)
    tfds.disable_progress_bar()
    # TFDS reports every builder config, reader and generated split at INFO/WARNING; the run
    # logs what it loaded itself. Its errors still show.
    logging.getLogger("tensorflow_datasets").setLevel(logging.ERROR)
    for name in ("absl", "tensorflow"):  # TFDS logs through absl and tf.get_logger()
      logging.getLogger(name).addFilter(_drop_tfds_records)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from golddiff_jax.data import builders, manual  # noqa: F401  (registers our builders)
  return tf, tfds


def _drop_tfds_records(record: logging.LogRecord) -> bool:
  return record.levelno >= logging.ERROR or "tensorflow_datasets" not in record.pathname


def network_reachable(host: str = "storage.googleapis.com", port: int = 443,
                      timeout: float = 3.0) -> bool:
  """Whether a TCP connection to ``host`` (TFDS's download mirror) opens within ``timeout`` s,
  through the HTTPS proxy when one is configured."""
  proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
  if proxy:
    hostport = proxy.split("://")[-1].split("/")[0].rsplit("@", 1)[-1]
    host, _, p = hostport.partition(":")
    port = int(p) if p.isdigit() else 443
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False


def resolution_of(data_config) -> int:
  """The image side length a config asks for (its ``resolution`` or the dataset's native one)."""
  spec = datasets.get_spec(data_config.dataset)
  return int(data_config.get("resolution") or spec.shape[0])


def builder_for(data_config):
  """The TFDS builder for ``data_config`` (not prepared)."""
  _, tfds = _import_tfds()
  from golddiff_jax.data import builders  # pylint: disable=g-import-not-at-top
  spec = datasets.get_spec(data_config.dataset)
  data_dir = data_config.get("data_dir")
  res = resolution_of(data_config)
  if spec.builtin:
    if spec.name == "procedural":
      config = builders.procedural_config(data_config.num_images, res, spec.shape[2],
                                          data_config.data_seed)
    else:
      config = builders.moons_config(data_config.num_images, seed=data_config.data_seed)
    predefined = tfds.builder_cls(spec.builder).builder_configs
    if config.name in predefined:  # TFDS refuses a custom config named like a predefined one.
      return tfds.builder(f"{spec.builder}/{config.name}", data_dir=data_dir)
    return tfds.builder(spec.builder, config=config, data_dir=data_dir)
  if spec.resolutions:
    stored = res if res in spec.resolutions else spec.shape[0]
    return tfds.builder(f"{spec.builder}/{stored}", data_dir=data_dir)
  return tfds.builder(spec.builder, data_dir=data_dir)


def prepare(builder, data_config) -> None:
  """Generates, downloads or converts the data once; raises ValueError with what to do."""
  if builder.is_prepared():
    return
  _, tfds = _import_tfds()
  from golddiff_jax.data import builders, manual  # pylint: disable=g-import-not-at-top
  spec = datasets.get_spec(data_config.dataset)
  manual_dir = data_config.get("manual_dir")
  downloads = not (spec.builtin or getattr(spec, "offline", False) or spec.manual_instructions)
  # tfds.testing.mock_data replaces the download with a no-op: nothing to probe then.
  mocked = type(builder).download_and_prepare.__module__.startswith("tensorflow_datasets.testing")
  if downloads and not mocked and not network_reachable():  # TFDS would retry for minutes
    raise ValueError(
        f"TFDS dataset {spec.builder!r} is not prepared in {builder.data_dir_root} and the "
        f"network is unreachable, so it cannot be downloaded. Prepare it on a machine with "
        f"network access (`tfds build {spec.builder}`) and copy its data_dir over "
        f"(config.data.data_dir), or use an offline dataset (mnist5k, procedural, moons).")
  logging.getLogger(__name__).info("preparing dataset %s in %s (once)", spec.name,
                                   builder.data_dir_root)
  # TFDS prints "Downloading and preparing dataset ..." to stdout; only a real download is news.
  quiet = contextlib.nullcontext() if downloads else contextlib.redirect_stdout(io.StringIO())
  try:
    with quiet:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except builders.OfflineDataError as e:
    raise ValueError(str(e)) from e
  except manual.ManualDataError as e:
    where = manual_dir or f"{builder.data_dir_root}/downloads/manual"
    raise ValueError(f"{e} (manual folder: {where}; set config.data.manual_dir)") from e
  except Exception as e:  # noqa: BLE001 - any download failure is reported the same way.
    if spec.builtin or spec.offline:
      raise
    raise ValueError(
        f"could not download and prepare TFDS dataset {spec.builder!r} into "
        f"{builder.data_dir_root}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
        f"Without network access, prepare it elsewhere (`tfds build {spec.builder}`) and copy "
        f"the data_dir over (config.data.data_dir).") from e


def process_split(data_config, *, process_index: int, process_count: int) -> str:
  """This process's slice of the configured split (``subset_size`` applied when no class filter)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  split = data_config.split
  subset = data_config.get("subset_size")
  if subset and data_config.get("class_id") is None:
    split = f"{split}[:{int(subset)}]"
  return tfds.split_for_jax_process(split, process_index=process_index,
                                    process_count=process_count)


def read_split(builder, split: str, data_config) -> Loaded:
  """Reads ``split`` of a prepared builder in dataset order into model-space arrays."""
  tf, tfds = _import_tfds()
  from golddiff_jax.data import preprocessing  # pylint: disable=g-import-not-at-top
  spec = datasets.get_spec(data_config.dataset)
  class_id = data_config.get("class_id")
  res = resolution_of(data_config)
  read_config = tfds.ReadConfig(interleave_cycle_length=1, shuffle_seed=None)
  ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
  if class_id is not None:
    ds = ds.filter(lambda ex: tf.equal(ex[spec.label_key], class_id))

  def convert(ex):
    if spec.is_points:
      image = preprocessing.point_to_image(ex[spec.image_key])
    else:
      image = preprocessing.to_model_space(ex[spec.image_key], resolution=res,
                                           channels=spec.shape[2])
    label = ex[spec.label_key] if spec.label_key else tf.constant(-1, tf.int64)
    return image, tf.cast(label, tf.int64)

  ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  images, labels = [], []
  for image, label in tfds.as_numpy(ds.batch(_BATCH).prefetch(2)):
    images.append(image)
    labels.append(label)
  shape = (0, 1, 1, spec.shape[2]) if spec.is_points else (0, res, res, spec.shape[2])
  images = np.concatenate(images) if images else np.zeros(shape, np.float32)
  labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
  return Loaded(images.astype(np.float32, copy=False), labels if spec.label_key else None)


def gather_processes(local: np.ndarray, allgather: Callable[[Any], Any] | None = None
                     ) -> np.ndarray:
  """Concatenates every process's rows in process order (slices may differ in length by one).

  ``allgather(x)`` returns x from every process stacked on a new leading axis; it defaults to
  `jax.experimental.multihost_utils.process_allgather`.
  """
  if allgather is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    allgather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=False))
  counts = np.asarray(allgather(np.asarray([local.shape[0]], np.int64))).reshape(-1)
  padded = np.zeros((int(counts.max()), *local.shape[1:]), local.dtype)
  padded[:local.shape[0]] = local
  stacked = np.asarray(allgather(padded))
  return np.concatenate([stacked[p, :int(c)] for p, c in enumerate(counts)])


def check_subset(builder, data_config, subset_name: str = "data.subset_size") -> None:
  """Raises ValueError naming ``subset_name`` when ``subset_size`` exceeds the split."""
  subset = data_config.get("subset_size")
  if not subset:
    return
  try:
    available = int(builder.info.splits[data_config.split].num_examples)
  except (KeyError, ValueError, TypeError):  # an unusual split expression: TFDS will say
    return
  if subset > available:
    raise ValueError(f"{subset_name}={subset} exceeds the {available} images of dataset "
                     f"{data_config.dataset!r} split {data_config.split!r}")


def load_images(data_config, *, process_index: int | None = None,
                process_count: int | None = None, gather: bool = True,
                subset_name: str = "data.subset_size") -> Loaded:
  """Loads the dataset ``data_config`` describes (see `configs/default.py`, section ``data``).

  Each process reads only its own slice of the split; with ``gather`` (the default) the slices
  are all-gathered so the result is the whole database, in dataset order, on every process.
  ``subset_name`` is the config field that set ``subset_size`` (for error messages).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if jax.process_count() > 1:  # process 0 generates or downloads; the others then reuse it
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if jax.process_index() == 0:
      prepare(builder_for(data_config), data_config)
    multihost_utils.sync_global_devices("golddiff_jax: dataset prepared")
  builder = builder_for(data_config)
  prepare(builder, data_config)  # a no-op once prepared (on a shared data_dir)
  check_subset(builder, data_config, subset_name)
  split = process_split(data_config, process_index=process_index, process_count=process_count)
  loaded = read_split(builder, split, data_config)
  images, labels = loaded.images, loaded.labels
  if gather and process_count > 1:
    images = gather_processes(images)
    labels = None if labels is None else gather_processes(labels)
  subset = data_config.get("subset_size")
  if subset and data_config.get("class_id") is not None and (gather or process_count == 1):
    images = images[:int(subset)]
    labels = None if labels is None else labels[:int(subset)]
  if images.shape[0] == 0:
    raise ValueError(f"dataset {data_config.dataset!r} split {data_config.split!r} holds no images"
                     + (f" of class {data_config.class_id}" if data_config.get("class_id")
                        is not None else ""))
  return Loaded(images, labels)
