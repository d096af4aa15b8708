"""tf.data input pipelines: image files or TFRecord records → decoded, resized, cached,
(augmented) batches of [0, 1] images."""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Sequence

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
from runway_cnn.data.tfrecords import RECORD_PREFIX
from runway_cnn.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 4096  # images mixed at a time when a training set is not kept in memory
CACHE_BUDGET = 4 * 2**30  # bytes of decoded images a split may keep in memory


def fits_in_memory(count: int, spec: PreprocessingSpec) -> bool:
    """Whether ``count`` decoded images (float32 at ``spec.cache_size``, what a training cache
    holds) fit ``CACHE_BUDGET``; larger splits are streamed and decoded again each epoch."""
    return count * spec.cache_size ** 2 * 3 * 4 <= CACHE_BUDGET


def _encoded(paths: Sequence[str], parallel_reads: bool = False,
             shuffle_seed: int | None = None) -> tf.data.Dataset:
    """``(position, encoded image)`` of every image of ``paths``: files (in order, or shuffled
    before they are read with ``shuffle_seed``), or records of a TFRecord dataset
    (``tfrecord:<shard>#<n>``, see :mod:`runway_cnn.data.tfrecords`), streamed shard by shard
    in record order, with ``parallel_reads`` from several shards at once, with ``shuffle_seed``
    in a shuffled shard order; a record finds its position through a lookup table. Consumers
    pair results with positions, never with the order of ``paths``."""
    positions = np.arange(len(paths), dtype=np.int64)
    records = [p.startswith(RECORD_PREFIX) for p in paths]
    if not any(records):
        # paths as the file system's own bytes: a name that is not UTF-8 reaches Python as a
        # str with surrogates, which TensorFlow cannot encode
        files = tf.data.Dataset.from_tensor_slices((positions, [os.fsencode(p) for p in paths]))
        if shuffle_seed is not None:
            files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
        return files.map(lambda i, p: (i, tf.io.read_file(p)), num_parallel_calls=AUTOTUNE)
    if not all(records):
        raise ValueError("a split mixes image files and TFRecord records")
    shards = list(dict.fromkeys(p[len(RECORD_PREFIX):].rpartition("#")[0] for p in paths))
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(paths)), positions), -1)

    def numbered(shard):
        prefix = tf.strings.join([RECORD_PREFIX, shard, "#"])
        return tf.data.TFRecordDataset(shard).enumerate().map(
            lambda n, record: (table.lookup(prefix + tf.strings.as_string(n)), record))

    cycle = min(4, len(shards)) if parallel_reads else 1
    ds = tf.data.Dataset.from_tensor_slices(shards)
    if shuffle_seed is not None:
        ds = ds.shuffle(len(shards), seed=shuffle_seed, reshuffle_each_iteration=True)
    parallel = {"num_parallel_calls": cycle, "deterministic": True} if cycle > 1 else {}
    ds = ds.interleave(numbered, cycle_length=cycle, **parallel).filter(lambda i, _: i >= 0)
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(paths)))  # every one found
    return ds.map(
        lambda i, record: (i, tf.io.parse_single_example(record, _IMAGE)["image/encoded"]),
        num_parallel_calls=AUTOTUNE)


_IMAGE = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}


def _gather(labels, position: tf.Tensor):
    """The labels (or ``(labels, weights)``) of the image at ``position``."""
    return tf.nest.map_structure(lambda t: tf.gather(t, position), labels)


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.round(x * 255.0), tf.uint8)


def _to_float(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32) / 255.0


def eval_dataset(paths: Sequence[str], labels, spec: PreprocessingSpec, batch_size: int,
                 cache: bool = True) -> tf.data.Dataset:
    """``(images, labels)`` batches of eval crops (resize + central crop), for Keras' ``fit`` /
    ``evaluate``: the order of images is the stream's, each with its own label. Predictions that
    must line up with ``paths`` use :func:`indexed_eval_dataset` and :func:`predict_in_order`."""
    ds = _encoded(paths).map(lambda i, data: (i, _to_uint8(central_crop(decode_image(data),
                                                                        spec))),
                             num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    ds = ds.map(lambda i, x: (x, _gather(labels, i)))
    return ds.batch(batch_size).map(_cast_batch, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def eval_crop(image: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """uint8 ``[h, w, 3]`` → the eval crop as float32 in [0, 1], exactly as :func:`eval_dataset`
    makes it (including its uint8 rounding)."""
    return _to_float(_to_uint8(central_crop(tf.constant(image), spec))).numpy()


def indexed_eval_dataset(paths: Sequence[str], spec: PreprocessingSpec, batch_size: int,
                         skip_unreadable: bool = False) -> tf.data.Dataset:
    """Eval crops as ``(positions, images)`` batches, decoded in parallel. With
    ``skip_unreadable`` an image TensorFlow cannot decode is left out (its position is missing:
    the caller reads it another way or reports it)."""
    ds = _encoded(paths).map(lambda i, data: (i, _to_uint8(central_crop(decode_image(data),
                                                                        spec))),
                             num_parallel_calls=AUTOTUNE)
    if skip_unreadable:
        ds = ds.ignore_errors()
    ds = ds.batch(batch_size)
    return ds.map(lambda i, x: (i, _to_float(x)), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def predict_in_order(predict: Callable[[np.ndarray], np.ndarray], paths: Sequence[str],
                     spec: PreprocessingSpec, batch_size: int,
                     on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """``predict`` (a batch of eval crops → one row each) of every image of ``paths``, rows in
    the order of ``paths`` whatever order the images were read in; ``on_batch(n)`` after each
    batch (a progress bar). An image that was not read is an error naming it."""
    rows, seen = None, np.zeros(len(paths), bool)
    for positions, images in indexed_eval_dataset(paths, spec, batch_size).as_numpy_iterator():
        out = np.asarray(predict(images))
        if rows is None:
            rows = np.zeros((len(paths), *out.shape[1:]), out.dtype)
        rows[positions], seen[positions] = out, True
        if on_batch is not None:
            on_batch(len(positions))
    if not seen.all():
        raise DataError(f"{paths[int(np.argmin(seen))]} was not read (moved or changed since "
                        "the dataset was scanned?)")
    return rows


def content_keys(paths: Sequence[str]) -> list[str]:
    """A key per image of ``paths`` (files or TFRecord records), the fingerprint of its encoded
    bytes: the same for a copy of the photo wherever it lies, so that photos are matched by
    content, not by path. Reads each image's bytes once, decodes none."""
    keys = [""] * len(paths)
    if not paths:
        return keys
    fingerprints = _encoded(paths).map(
        lambda i, data: (i, tf.fingerprint(tf.expand_dims(data, 0))[0]),
        num_parallel_calls=AUTOTUNE)
    for position, fingerprint in fingerprints.as_numpy_iterator():
        keys[position] = fingerprint.tobytes().hex()
    return keys


def eval_crops(paths: Sequence[str], spec: PreprocessingSpec, batch_size: int) -> np.ndarray:
    """Every image's eval crop, float32 ``[n, s, s, 3]`` in [0, 1], in the order of ``paths``."""
    return predict_in_order(lambda images: images, paths, spec, batch_size)


def train_dataset(paths: Sequence[str], labels: np.ndarray, spec: PreprocessingSpec,
                  batch_size: int, augmentation: Augmentation | None, seed: int,
                  cache: bool = True, weights: np.ndarray | None = None,
                  sizes: Sequence[int] | None = None,
                  images: tf.data.Dataset | None = None,
                  first_epoch: int = 0) -> tf.data.Dataset:
    """Shuffled training batches; random resized crop + flip + jitter unless ``augmentation`` is
    None. The same seed gives the same order and augmentations.

    With ``cache`` the decoded images are kept in memory at ``spec.cache_size`` (shorter side) and
    shuffled whole, so each epoch after the first only crops and augments. Without it nothing is
    kept (memory does not grow with the dataset): files are shuffled before they are read;
    TFRecord shards are shuffled, read several at once and their records mixed in a bounded
    buffer, and every image is decoded again each epoch. With ``weights`` (one per image),
    batches are ``(images, labels, weights)``: Keras' sample weights.

    Without ``sizes`` the dataset is one epoch at ``spec.image_size`` (Keras iterates it again
    each epoch). With ``sizes`` it holds one epoch per entry, each cropped to its own size
    (progressive resizing), epoch ``e`` shuffled and augmented with seeds of its own (counted
    from ``first_epoch``: a resumed stage's epochs get the seeds they had): feed it to
    ``fit`` with ``steps_per_epoch`` (:func:`steps_per_epoch`) so that Keras keeps one iterator
    across epochs. Images are cached once for every epoch. ``images`` (from
    :func:`decoded_images`, for the same paths and augmentation) is a cache to share: datasets
    built on it decode nothing once it is filled (:func:`fill`).
    """
    if weights is not None:
        labels = (labels, np.asarray(weights, np.float32))
    prepare = _prepare(spec, augmentation)
    if augmentation is None:  # the eval crop, shuffled
        def finish(image, _, size):
            return _to_float(image if size == spec.image_size else
                             tf.image.resize(image, [size, size], antialias=True))
    else:
        def finish(image, random_seed, size):
            return random_resized_crop(image, replace(spec, image_size=size), augmentation,
                                       random_seed)
    cached = images
    if cached is None and cache:
        cached = decoded_images(paths, spec, augmentation)

    def epoch(epoch_seed: int, size: int) -> tf.data.Dataset:
        if cached is not None:
            ds = cached.shuffle(len(paths), seed=epoch_seed, reshuffle_each_iteration=True)
        else:
            ds = _encoded(paths, parallel_reads=True, shuffle_seed=epoch_seed)
            ds = ds.shuffle(min(len(paths), SHUFFLE_BUFFER), seed=epoch_seed,
                            reshuffle_each_iteration=True)
            ds = ds.map(lambda i, data: (i, prepare(data)), num_parallel_calls=AUTOTUNE)
        seeds = tf.data.Dataset.random(seed=epoch_seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda item, s: (finish(item[1], s, size), _gather(labels, item[0])),
            num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size).map(_flatten_weights)

    if sizes is None:
        return epoch(seed, spec.image_size).prefetch(AUTOTUNE)
    if not sizes:
        raise ValueError("sizes: give at least one epoch's image size")
    epochs = [epoch(seed + e, int(size)) for e, size in enumerate(sizes, first_epoch)]
    ds = epochs[0]
    for more in epochs[1:]:
        ds = ds.concatenate(more)
    return ds.prefetch(AUTOTUNE)


def _prepare(spec: PreprocessingSpec, augmentation: Augmentation | None
             ) -> Callable[[tf.Tensor], tf.Tensor]:
    """What a training cache keeps of an encoded image: the eval crop (uint8) without
    augmentation, else the image at ``spec.cache_size`` (shorter side) to crop from."""
    if augmentation is None:
        return lambda data: _to_uint8(central_crop(decode_image(data), spec))
    return lambda data: resize_shorter_side(decode_image(data), spec.cache_size)


def decoded_images(paths: Sequence[str], spec: PreprocessingSpec,
                   augmentation: Augmentation | None) -> tf.data.Dataset:
    """``(position, image)`` of every image of ``paths`` as :func:`train_dataset` keeps them in
    memory: a cache several training datasets can share (its ``images``)."""
    prepare = _prepare(spec, augmentation)
    return _encoded(paths, parallel_reads=True).map(
        lambda i, data: (i, prepare(data)), num_parallel_calls=AUTOTUNE).cache()


def fill(images: tf.data.Dataset) -> None:
    """Reads :func:`decoded_images` once to its end, which fills its cache."""
    for _ in images:
        pass


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Batches in one epoch of :func:`train_dataset` (the last one may be smaller)."""
    return -(-count // batch_size)


def _cast_batch(images, labels):
    return _flatten_weights(_to_float(images), labels)


def _flatten_weights(images, labels):
    """``(images, (labels, weights))`` → ``(images, labels, weights)``, as Keras' ``fit`` takes
    sample weights."""
    if isinstance(labels, tuple):
        return images, labels[0], labels[1]
    return images, labels
