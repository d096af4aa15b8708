"""Input pipeline vs training step, and a cached vs uncached stage-1 epoch, in one run.

    python bench/bench_pipeline.py [--dataset_dir clothing_sample] [--model_name efficientnet_lite0]

Prints images/s of the tf.data train pipeline (decode + augment, after its cache is warm and
with a cold cache), images/s of a training step of the whole model (frozen backbone, as stage 1
without caching), and the wall time of one stage-1 epoch on cached features vs on images.
"""
from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from runway_cnn.data import folders as data
from runway_cnn.data import pipeline
from runway_cnn.training import schedule
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.data.preprocessing import Augmentation
from runway_cnn.training.device import configure_device
from runway_cnn.tasks import get_task
from runway_cnn.backbones.features import extract_features
from runway_cnn.training.trainer import classifier


def _images_per_second(ds, batches: int) -> float:
    start, n = time.perf_counter(), 0
    for i, (x, _) in enumerate(ds):
        n += int(x.shape[0])
        if i + 1 >= batches:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", default="clothing_sample")
    parser.add_argument("--model_name", default="efficientnet_lite0")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    configure_device("off", "off", seed=0)
    dataset = data.scan_image_folder(data.resolve_dataset_dir(args.dataset_dir))
    train = dataset.splits["train"]
    backbone = get_backbone(args.model_name, weights=None if "efficientnet_b" in args.model_name
                            else "default")
    spec, n, bs = backbone.preprocessing, len(train.paths), args.batch_size
    batches = n // bs

    ds = pipeline.train_dataset(train.paths, train.labels, spec, bs, Augmentation(), seed=0)
    cold = _images_per_second(ds, batches)          # first pass: decode + resize + augment
    warm = _images_per_second(ds.repeat(), batches)  # cached decode: crop + augment only

    task = get_task("single_label", dataset.class_names)
    head = task.build_head(backbone.feature_dim)
    model = classifier(backbone, head)
    schedule.freeze(backbone.model)
    model.compile(keras.optimizers.Adam(1e-3), task.loss(), jit_compile=False)
    x = np.random.rand(bs, spec.image_size, spec.image_size, 3).astype("float32")
    y = np.zeros(bs, "int32")
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(5):
        model.train_on_batch(x, y)
    step = 5 * bs / (time.perf_counter() - start)

    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    uncached_epoch = time.perf_counter() - start
    start = time.perf_counter()
    features = extract_features(backbone, train, bs)
    extract = time.perf_counter() - start
    head.compile(keras.optimizers.Adam(1e-3), task.loss())
    head.fit(features, train.labels, batch_size=bs, epochs=1, verbose=0)
    start = time.perf_counter()
    head.fit(features, train.labels, batch_size=bs, epochs=1, verbose=0)
    cached_epoch = time.perf_counter() - start

    print(f"dataset {args.dataset_dir}: {n} train images; backbone {backbone.name} "
          f"({spec.image_size}px); batch {bs}")
    print("| measure | value |\n|---|---|")
    print(f"| tf.data train pipeline, first pass (decode + resize + augment) | {cold:.0f} img/s |")
    print(f"| tf.data train pipeline, cached (crop + augment) | {warm:.0f} img/s |")
    print(f"| training step, frozen backbone | {step:.1f} img/s |")
    print(f"| pipeline / step (cached, first pass) | {warm / step:.1f}x, {cold / step:.1f}x |")
    print(f"| stage-1 epoch on images | {uncached_epoch:.2f} s |")
    print(f"| stage-1 epoch on cached features | {cached_epoch:.4f} s "
          f"({100 * cached_epoch / uncached_epoch:.2f} % of uncached) |")
    print(f"| one-off feature extraction | {extract:.2f} s |")


if __name__ == "__main__":
    main()
