"""Tiny backbones that tests make themselves (nothing is downloaded): TF-Hub-format SavedModels
(pooled features only) and a registered Keras feature map (Grad-CAM needs one)."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones.factory import BACKBONES, BackboneEntry
from runway_cnn.backbones.hub import save_hub_module

FEATURE_MAP_BACKBONE = "test_tiny_feature_map"
FEATURE_MAP_SIZE = 48  # pixels: its default input size (crop fraction 1)


class RefuseEmptyBatch(keras.layers.Layer):
    """Fails on a batch of 0 images on every CPU, as TF's convolution / BatchNorm kernels do on
    some (2-core AMD EPYC): a test model with it catches any path that sends an empty batch."""

    def call(self, images):
        check = tf.debugging.assert_positive(tf.shape(images)[0],
                                             message="an empty batch reached the model")
        with tf.control_dependencies([check]):
            return tf.identity(images)


def tiny_backbone_model(seed: int = 0) -> keras.Model:
    """[0, 1] images → 16-d pooled features: two conv + BatchNorm + ReLU blocks (an empty batch
    is an error, see :class:`RefuseEmptyBatch`)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    images = keras.Input((None, None, 3))
    x = RefuseEmptyBatch(name="refuse_empty_batch")(images)
    for i, width in enumerate((8, 16), start=1):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"block{i}_conv",
                                kernel_initializer=init)(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, features, name="tiny")


def calibrate_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Sets each BatchNorm's moving statistics to those of ``images``, as a pre-trained net's
    would be, so the features come out at a realistic O(1) scale."""
    x = images
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(x.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(x.var(axis=(0, 1, 2)))
        x = np.asarray(layer(x, training=False))


def make_tiny_hub_module(path: Path, seed: int = 0, nan: bool = False) -> Path:
    """Writes the tiny backbone, BatchNorm calibrated on test-made photos, as a TF-Hub reusable
    SavedModel at ``path`` (with ``nan``, broken weights that give NaN features); returns
    ``path``. The files are copied from :func:`_saved_tiny_hub_module`'s."""
    shutil.copytree(_saved_tiny_hub_module(seed, nan), path, dirs_exist_ok=True)
    return Path(path)


@functools.cache  # an exception is not cached: a failed save is tried again
def _saved_tiny_hub_module(seed: int, nan: bool) -> Path:
    """The tiny hub module of ``seed`` / ``nan``, built and saved once per process into a private
    dir that no test touches (deleted at exit)."""
    from conftest import make_image

    rng = np.random.default_rng(seed)
    images = np.stack([np.asarray(make_image(i % 4, (32, 32), rng), np.float32) / 255.0
                       for i in range(32)])
    model = tiny_backbone_model(seed)
    calibrate_batchnorm(model, images)
    if nan:
        kernel = model.get_layer("block1_conv").kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    directory = Path(tempfile.mkdtemp(prefix="tiny-hub-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    save_hub_module(model, str(directory / "module"))
    return directory / "module"


def tiny_feature_map(weights, image_size: int) -> keras.Model:
    """Two stride-2 convolutions with ReLU: a [s/4, s/4, 32] feature map, untrained (fixed random
    filters respond to colour locally; the head learns which ones matter)."""
    init = keras.initializers.GlorotUniform(seed=1)
    images = keras.Input((image_size, image_size, 3))
    x = images
    for i, width in enumerate((16, 32), start=1):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", kernel_initializer=init,
                                name=f"conv{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return keras.Model(images, x, name="tiny_feature_map")


if FEATURE_MAP_BACKBONE not in BACKBONES:
    BACKBONES.register(FEATURE_MAP_BACKBONE, BackboneEntry(
        tiny_feature_map, FEATURE_MAP_SIZE, default_weights=None, crop_fraction=1.0))
