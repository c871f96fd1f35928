"""Per-example preprocessing into model space (docs/method.md §2.6), as TensorFlow ops for tf.data
pipelines.

uint8 image → (grayscale) → (resize) → (v/255 − 0.5)/0.5: float32 HWC in [−1, 1].

The resize is TensorFlow's antialiased bilinear, rounded back to integer levels as PIL would.
torchvision's ``Resize`` on PIL images (the published pipeline) is PIL bilinear with antialias;
the two agree to within one grey level on most pixels (an accepted deviation, see the README).
The manual-download builders resize with PIL itself at preparation time, so CelebA-HQ and AFHQ
at their builder resolutions match torchvision exactly; this resize only runs when
``config.data.resolution`` asks for a size the stored data does not have.
"""

from __future__ import annotations

import tensorflow as tf


def to_model_space(image: tf.Tensor, *, resolution: int | None, channels: int) -> tf.Tensor:
  """uint8 image [H, W, C] → float32 [r, r, channels] in [−1, 1]."""
  image = tf.cast(image, tf.float32)
  have = image.shape[-1]
  if channels == 1 and have == 3:
    image = tf.round(tf.image.rgb_to_grayscale(image))  # ITU-R 601 luma, as PIL "L"
  elif channels == 3 and have == 1:
    image = tf.tile(image, [1, 1, 3])
  if resolution is not None and tuple(image.shape[:2]) != (resolution, resolution):
    image = tf.image.resize(image, [resolution, resolution], method="bilinear", antialias=True)
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
  return (image / 255.0 - 0.5) / 0.5


def point_to_image(point: tf.Tensor) -> tf.Tensor:
  """A float point [C] already in [−1, 1] → a 1×1×C "image"."""
  return tf.reshape(tf.cast(point, tf.float32), [1, 1, -1])
