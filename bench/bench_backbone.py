"""Forward images/s: converted EfficientNet-Lite0 SavedModel vs Keras' EfficientNetB0, in one run.

    python bench/bench_backbone.py [--batch_size 32] [--image_size 224] [--repeats 5]

Three backbones producing pooled features, each called as a graph (``tf.function``; the
SavedModel's ``__call__`` already is one) with ``training=False`` on the same random batch:
the converted ``efficientnet_lite0/feature_vector`` SavedModel (converted first if missing, see
``checkpoints/README.md``), the same Lite0 as an in-memory Keras model, and
``keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg")``.
Warm-up calls are excluded; the models take turns in every repeat so that load from other
processes hits them alike. Prints a markdown table and the Lite0 / B0 speed ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones import checkpoints

NAME = "efficientnet_lite0"


def _graph(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    return tf.function(lambda images: model(images, training=False), autograph=False)


def _seconds_per_call(forward: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor) -> float:
    start = time.perf_counter()
    forward(images).numpy()  # .numpy() waits for the result
    return time.perf_counter() - start


def backbones() -> dict[str, tuple[Callable[[tf.Tensor], tf.Tensor], int]]:
    """name → (forward function, parameter count)."""
    saved = tf.saved_model.load(str(checkpoints.ensure_converted(NAME)))
    lite0 = checkpoints.feature_model(checkpoints.load_keras_model(NAME, include_top=True))
    b0 = keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg")
    saved_params = sum(int(np.prod(v.shape)) for v in saved.variables if v.dtype.is_floating)
    return {
        "Lite0 SavedModel (converted)": (lambda x: saved(x, training=False), saved_params),
        "Lite0 Keras (in memory)": (_graph(lite0), lite0.count_params()),
        "keras.applications.EfficientNetB0": (_graph(b0), b0.count_params()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = tf.constant(rng.random(shape, dtype=np.float32))
    models = backbones()
    for forward, _ in models.values():
        for _ in range(args.warmup):
            forward(images).numpy()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, (forward, _) in models.items():
            times[name].append(_seconds_per_call(forward, images))

    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    best = {name: args.batch_size / min(t) for name, t in times.items()}
    print(f"batch {args.batch_size}, {args.image_size}x{args.image_size}, "
          f"{args.repeats} timed repeats after {args.warmup} warm-up calls, "
          f"TF {tf.__version__}, Keras {keras.__version__}, devices "
          f"{[d.device_type for d in tf.config.list_logical_devices()]}")
    print()
    print("| backbone | params | images/s (median) | images/s (best) |")
    print("| --- | ---: | ---: | ---: |")
    for name, (_, params) in models.items():
        print(f"| {name} | {params / 1e6:.2f} M | {rate[name]:.1f} | {best[name]:.1f} |")
    print()
    b0 = rate["keras.applications.EfficientNetB0"]
    for name in list(models)[:2]:
        print(f"{name} / EfficientNetB0 speed ratio: {rate[name] / b0:.2f}x")


if __name__ == "__main__":
    main()
