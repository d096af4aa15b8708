"""Image preprocessing: decoding, eval / train transforms, and the normalisation layer.

The pipeline hands every backbone float32 images in [0, 1] (the TF-Hub convention); each backbone
starts with a :class:`Normalize` layer built from its registry entry, so the exported model and the
training pipeline can never disagree on value range or mean / std.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import tensorflow as tf


@dataclass(frozen=True)
class Normalization:
    """How a backbone wants its pixels: ``((x * scale + offset)[bgr?] - mean) / std`` for x in [0, 1]."""

    scale: float = 1.0
    offset: float = 0.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False

    def layer(self, name: str = "normalize") -> "Normalize":
        return Normalize(self.scale, self.offset, self.mean, self.std, self.bgr, name=name)


IDENTITY = Normalization()
MINUS_ONE_TO_ONE = Normalization(scale=2.0, offset=-1.0)
ZERO_TO_255 = Normalization(scale=255.0)


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation strengths (random resized crop, flip, light colour jitter)."""

    min_crop_area: float = 0.35
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1


@dataclass(frozen=True)
class PreprocessingSpec:
    """Everything the data pipeline needs to know about a backbone's input."""

    image_size: int
    crop_fraction: float = 0.875
    normalization: Normalization = field(default_factory=Normalization)

    @property
    def cache_size(self) -> int:
        """Shorter side the decoded images are cached at (the eval crop's source size)."""
        return int(round(self.image_size / self.crop_fraction))


@keras.saving.register_keras_serializable(package="runway_cnn")
class Normalize(keras.layers.Layer):
    """Maps [0, 1] images to the value range a backbone was trained with."""

    def __init__(self, scale=1.0, offset=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 bgr=False, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset, self.bgr = float(scale), float(offset), bool(bgr)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def call(self, images):
        x = images * self.scale + self.offset
        if self.bgr:
            x = x[..., ::-1]
        mean = keras.ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = keras.ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset,
                "mean": self.mean, "std": self.std, "bgr": self.bgr}


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG / PNG / GIF / BMP bytes → uint8 ``[h, w, 3]`` (first frame of a GIF)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes so the shorter side is ``size`` (aspect kept); returns uint8."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    resized = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def central_crop(image: tf.Tensor, spec: PreprocessingSpec) -> tf.Tensor:
    """Eval transform: central square crop of ``crop_fraction`` of the shorter side, resized to
    ``image_size``; returns float32 in [0, 1]."""
    shape = tf.shape(image)[:2]
    side = tf.maximum(1, tf.cast(tf.cast(tf.reduce_min(shape), tf.float32) * spec.crop_fraction,
                                 tf.int32))  # a 1×N image still gives a one-pixel crop
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    crop = image[top:top + side, left:left + side]
    resized = tf.image.resize(crop, [spec.image_size, spec.image_size], antialias=True)
    return tf.clip_by_value(resized / 255.0, 0.0, 1.0)


def random_resized_crop(image: tf.Tensor, spec: PreprocessingSpec, aug: Augmentation,
                        seed: tf.Tensor) -> tf.Tensor:
    """Train transform: random resized crop, horizontal flip and colour jitter; float32 in [0, 1].

    ``seed`` is a stateless seed (shape [2]) so the same seed gives the same augmentation.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        area_range=(aug.min_crop_area, 1.0), aspect_ratio_range=aug.aspect_ratio_range,
        min_object_covered=0.0, use_image_if_no_bounding_boxes=True, max_attempts=10)
    crop = tf.slice(image, begin, size)
    x = tf.image.resize(crop, [spec.image_size, spec.image_size], antialias=True) / 255.0
    if aug.flip:
        x = tf.image.stateless_random_flip_left_right(x, seeds[1])
    if aug.brightness:
        x = tf.image.stateless_random_brightness(x, aug.brightness, seeds[2])
    if aug.contrast:
        x = tf.image.stateless_random_contrast(x, 1 - aug.contrast, 1 + aug.contrast, seeds[3])
    if aug.saturation:
        x = tf.image.stateless_random_saturation(x, 1 - aug.saturation, 1 + aug.saturation,
                                                 seeds[4])
    return tf.clip_by_value(x, 0.0, 1.0)
