"""Issue 14's lever "cache activations at the unfreeze boundary", measured on its own: stage 2 that
trains only the top blocks of EfficientNet-Lite0 on cached activations of several augmented views.

    PYTHONPATH=. python bench/bench_cached_top.py [--dataset_dir …/zalando-dresses/brands]
        [--boundary block6a_expand_conv] [--views 8] [--splits 0 1 2]
        [--configs 2e-4:8:0.1 1e-3:16:0]

The Keras EfficientNet-Lite0 (the converter's own model, ImageNet weights) is cut at
``--boundary``: the frozen bottom runs once per image and view (eval crop; ``--views`` random
resized crops + flips + jitter, the package's train transform), its activations kept as float16,
shared by every split. Per split (the package's stratified split of ``--seed`` i), stage 1 is the
package's own (logistic regression on standardised pooled features, C on validation), then each
config ``peak_lr:epochs:label_smoothing[:frozen_head]`` trains the top blocks (BatchNorm frozen)
and the head (or, with ``frozen_head``, the top blocks only: the regression's head stays put) with
Adam (warm-up, cosine decay), epoch e on view e mod V. Prints validation / test top-1 of
stage 1, of the last epoch and of the best epoch on validation, the seconds per config, and the
bottom pass's cost.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones.checkpoints import load_keras_model
from runway_cnn.data import pipeline
from runway_cnn.data.folders import scan_image_folder
from runway_cnn.data.preprocessing import (
    Augmentation,
    PreprocessingSpec,
    decode_image,
    random_resized_crop,
    resize_shorter_side,
)
from runway_cnn.data.splits import stratified_split
from runway_cnn.tasks import get_task
from runway_cnn.training.schedule import warmup_cosine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bottom_activations(bottom: keras.Model, paths: list[str], spec: PreprocessingSpec,
                       views: int) -> tuple[np.ndarray, np.ndarray]:
    """float16 activations of the eval crops ``[n, …]`` and of ``views`` augmented views
    ``[views, n, …]`` (view v of image i: stateless seed (i, v))."""
    crops = pipeline.predict_in_order(bottom.predict_on_batch, paths, spec, 32)
    images = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: resize_shorter_side(decode_image(tf.io.read_file(p)), spec.cache_size)).cache()
    index = tf.data.Dataset.from_tensor_slices(np.arange(len(paths), dtype=np.int64))
    out = []
    for v in range(views):
        ds = tf.data.Dataset.zip(images, index).map(
            lambda x, i, v=v: random_resized_crop(x, spec, Augmentation(),
                                                  tf.stack([i, tf.constant(v, tf.int64)])),
            num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(2)
        out.append(bottom.predict(ds, verbose=0).astype(np.float16))
    return crops.astype(np.float16), np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", type=Path, default=DATA / "zalando-dresses" / "brands")
    parser.add_argument("--boundary", default="block6a_expand_conv")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=["2e-4:8:0.1", "1e-3:16:0"])
    args = parser.parse_args()

    dataset = scan_image_folder(args.dataset_dir, validation_fraction=0.1, test_fraction=0.1,
                                seed=0)
    paths = [p for s in dataset.splits.values() for p in s.paths]
    y = np.concatenate([s.targets for s in dataset.splits.values()])
    spec = PreprocessingSpec(224)
    full = load_keras_model("efficientnet_lite0", include_top=False)
    boundary = full.get_layer(args.boundary).input
    bottom, top = keras.Model(full.input, boundary), keras.Model(boundary, full.output)
    start = time.perf_counter()
    crops, views = bottom_activations(bottom, paths, spec, args.views)
    bottom_seconds = time.perf_counter() - start
    print(f"{len(paths)} images: bottom pass of the eval crops and {args.views} views "
          f"{bottom_seconds:.0f} s, {(crops.nbytes + views.nbytes) / 1e6:.0f} MB float16",
          flush=True)
    pooled = top.predict(crops.astype(np.float32), batch_size=64, verbose=0)
    imagenet = [w.copy() for w in top.get_weights()]
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    rows: dict[str, list] = {}
    for split in args.splits:
        index = stratified_split(y, 0.1, 0.1, split)
        train, val, test = index["train"], index["validation"], index["test"]
        for config in args.configs:
            peak, epochs, smoothing, *head_rule = config.split(":")
            top.set_weights(imagenet)
            task = get_task("single_label", dataset.labels, label_smoothing=float(smoothing))
            head = task.build_head(pooled.shape[1])
            task.fit_head_convex(head, pooled[train], y[train], pooled[val], y[val])
            head.trainable = head_rule != ["frozen_head"]
            inputs = keras.Input(boundary.shape[1:])
            model = keras.Model(inputs, head(top(inputs)))

            def accuracy(rows_: np.ndarray) -> float:
                logits = model.predict(crops[rows_].astype(np.float32), batch_size=64,
                                       verbose=0)
                return float(np.mean(logits.argmax(1) == y[rows_]))

            stage1 = (accuracy(val), accuracy(test))
            steps = int(np.ceil(len(train) / 32)) * int(epochs)
            model.compile(keras.optimizers.Adam(warmup_cosine(float(peak), steps, 0.1)),
                          loss=task.loss())
            clock, curve = time.perf_counter(), []
            for epoch in range(int(epochs)):
                model.fit(views[epoch % args.views][train].astype(np.float32), y[train],
                          batch_size=32, epochs=1, shuffle=True, verbose=0)
                curve.append((accuracy(val), accuracy(test)))
            seconds = time.perf_counter() - clock
            best = max(range(len(curve)), key=lambda i: curve[i][0])
            rows.setdefault(config, []).append((*stage1, *curve[-1], *curve[best], seconds))
            print(f"split {split} {config}: stage 1 {stage1[0]:.3f}/{stage1[1]:.3f}, last epoch "
                  f"{curve[-1][0]:.3f}/{curve[-1][1]:.3f}, best on validation "
                  f"{curve[best][0]:.3f}/{curve[best][1]:.3f} (validation/test), {seconds:.0f} s; "
                  f"validation by epoch {[round(c[0], 3) for c in curve]}", flush=True)
    print("| config (peak:epochs:smoothing) | stage 1 val / test | last epoch | best epoch on "
          "val | seconds a split |")
    print("|---|---|---|---|---|")
    for config, r in rows.items():
        r = np.array(r)
        print(f"| {config} | {r[:, 0].mean():.3f} / {r[:, 1].mean():.3f} | {r[:, 2].mean():.3f} / "
              f"{r[:, 3].mean():.3f} | {r[:, 4].mean():.3f} / {r[:, 5].mean():.3f} | "
              f"{r[:, 6].mean():.0f} |")


if __name__ == "__main__":
    main()
