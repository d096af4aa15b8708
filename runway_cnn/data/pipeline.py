"""tf.data input pipelines: files → decoded, resized, cached, (augmented) batches of [0, 1] images."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from runway_cnn.data.preprocessing import (
    Augmentation,
    PreprocessingSpec,
    central_crop,
    decode_image,
    random_resized_crop,
    resize_shorter_side,
)

AUTOTUNE = tf.data.AUTOTUNE


def _read(path: tf.Tensor) -> tf.Tensor:
    return decode_image(tf.io.read_file(path))


def _paths(paths: Sequence[str]) -> tf.data.Dataset:
    """File paths as bytes, the file system's own (a name that is not UTF-8 reaches Python as a
    str with surrogates, which TensorFlow cannot encode)."""
    return tf.data.Dataset.from_tensor_slices([os.fsencode(p) for p in paths])


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(x * 255.0), tf.uint8)


def _to_float(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32) / 255.0


def eval_dataset(paths: Sequence[str], labels: np.ndarray | None, spec: PreprocessingSpec,
                 batch_size: int, cache: bool = True) -> tf.data.Dataset:
    """Resize + central crop, in file order; yields ``(images, labels)`` or just images."""
    ds = _paths(paths)
    ds = ds.map(lambda p: _to_uint8(central_crop(_read(p), spec)), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(labels))
    return ds.batch(batch_size).map(_cast_batch, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def eval_crop(image: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """uint8 ``[h, w, 3]`` → the eval crop as float32 in [0, 1], exactly as :func:`eval_dataset`
    makes it (including its uint8 rounding)."""
    return _to_float(_to_uint8(central_crop(tf.constant(image), spec))).numpy()


def indexed_eval_dataset(paths: Sequence[str], spec: PreprocessingSpec,
                         batch_size: int) -> tf.data.Dataset:
    """Eval crops in file order as ``(positions, images)`` batches, decoded in parallel; a file
    TensorFlow cannot decode is left out (its position is missing: the caller reads it another
    way or reports it)."""
    positions = tf.data.Dataset.from_tensor_slices(np.arange(len(paths), dtype=np.int64))
    ds = tf.data.Dataset.zip(positions, _paths(paths)).map(
        lambda i, p: (i, _to_uint8(central_crop(_read(p), spec))), num_parallel_calls=AUTOTUNE)
    ds = ds.ignore_errors().batch(batch_size)
    return ds.map(lambda i, x: (i, _to_float(x)), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def train_dataset(paths: Sequence[str], labels: np.ndarray, spec: PreprocessingSpec,
                  batch_size: int, augmentation: Augmentation | None, seed: int,
                  cache: bool = True, weights: np.ndarray | None = None) -> tf.data.Dataset:
    """Shuffled training batches; random resized crop + flip + jitter unless ``augmentation`` is None.

    Decoded images are cached at ``spec.cache_size`` (shorter side), so each epoch after the first
    only crops and augments. The same seed gives the same order and augmentations. With
    ``weights`` (one per image), batches are ``(images, labels, weights)``: Keras' sample weights.
    """
    if weights is not None:
        labels = (labels, np.asarray(weights, np.float32))
    if augmentation is None:
        ds = eval_dataset(paths, labels, spec, batch_size=1, cache=cache).unbatch()
        return (ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).prefetch(AUTOTUNE))
    images = _paths(paths).map(
        lambda p: resize_shorter_side(_read(p), spec.cache_size), num_parallel_calls=AUTOTUNE)
    if cache:
        images = images.cache()
    ds = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(labels))
    ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(
        lambda xy, s: (random_resized_crop(xy[0], spec, augmentation, s), xy[1]),
        num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).map(_flatten_weights).prefetch(AUTOTUNE)


def _cast_batch(*batch):
    if len(batch) == 1:
        return _to_float(batch[0])
    return _flatten_weights(_to_float(batch[0]), batch[1])


def _flatten_weights(images, labels):
    """``(images, (labels, weights))`` → ``(images, labels, weights)``, as Keras' ``fit`` takes
    sample weights."""
    if isinstance(labels, tuple):
        return images, labels[0], labels[1]
    return images, labels
