"""Stage-1 levers that cost no stage 2: augmented views as extra regression rows, test-time flip
averaging, and evaluating at a higher resolution than the head was fitted at (FixRes).

    PYTHONPATH=. python bench/bench_stage1_views.py \
        [--dataset_dir /work/shared/data/clothing-small] [--num_splits 0] [--views 4] \
        [--eval_size 288] [--features_file F.npz]

Features of every image are computed once per view with the package's backbone (Lite0, 224 px):
the eval crop, its mirror, ``--views`` random-resized-crop / flip / jitter views (the package's
stage-2 train transform, fixed seeds) and the eval crop at ``--eval_size``. Each row then fits
the package's stage 1 (``SingleLabelTask.fit_head_convex``: standardised logistic regression, C
on validation) on the rows it names and scores validation / test top-1. With given splits
(clothing-small) one figure per row; with ``--num_splits N`` (Zalando brands) the package's N
stratified splits of the whole pool, mean ± std, and how many splits the row beats the default
on validation.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from runway_cnn.backbones.factory import get_backbone
from runway_cnn.data import folders as data
from runway_cnn.data.pipeline import predict_in_order
from runway_cnn.data.preprocessing import (
    Augmentation,
    decode_image,
    random_resized_crop,
    resize_shorter_side,
)
from runway_cnn.tasks.single_label import SingleLabelTask


def view_dataset(paths: list[str], spec, seed: int, batch_size: int) -> tf.data.Dataset:
    """The package's train transform with a fixed seed per image (one augmented view each)."""
    aug = Augmentation()

    def load(i, path):
        image = resize_shorter_side(decode_image(tf.io.read_file(path)), spec.cache_size)
        return random_resized_crop(image, spec, aug, tf.stack([tf.cast(seed, tf.int64), i]))

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), paths))
    return ds.map(load, tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compute_views(paths: list[str], views: int, eval_size: int, batch_size: int) -> dict:
    backbone = get_backbone("efficientnet_lite0")
    spec, model = backbone.preprocessing, backbone.pooled("avg")
    out, seconds = {}, {}

    def timed(name, ds):
        start = time.perf_counter()
        out[name] = ds() if callable(ds) else model.predict(ds, verbose=0).astype(np.float32)
        seconds[name] = time.perf_counter() - start
        print(f"  {name}: {len(paths) / seconds[name]:.1f} img/s", flush=True)

    timed("eval", lambda: predict_in_order(model.predict_on_batch, paths, spec, batch_size))
    timed("flip", lambda: predict_in_order(lambda x: model.predict_on_batch(x[:, :, ::-1]),
                                           paths, spec, batch_size))
    for v in range(views):
        timed(f"view{v}", view_dataset(paths, spec, 1000 + v, batch_size))
    big = get_backbone("efficientnet_lite0", image_size=eval_size)
    timed(f"eval{eval_size}", lambda: predict_in_order(big.pooled("avg").predict_on_batch, paths,
                                                       big.preprocessing, batch_size))
    return {**out, **{f"seconds_{k}": np.array(v) for k, v in seconds.items()}}


def score(task: SingleLabelTask, feats: dict, idx: dict, train_views: list[str],
          eval_views: list[str], labels: np.ndarray) -> tuple[float, float]:
    """Fits stage 1 on ``train_views`` rows of the training images; validation / test top-1 of
    the mean probabilities over ``eval_views``. C is chosen on the plain eval crop."""
    head = task.build_head(feats["eval"].shape[1])
    x = np.concatenate([feats[v][idx["train"]] for v in train_views])
    y = np.tile(labels[idx["train"]], len(train_views))
    task.fit_head_convex(head, x, y, feats["eval"][idx["validation"]],
                         labels[idx["validation"]])
    result = []
    for split in ("validation", "test"):
        p = sum(task.probabilities(head.predict(feats[v][idx[split]], verbose=0))
                for v in eval_views)
        result.append(float(np.mean(p.argmax(1) == labels[idx[split]])))
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_dir", default="/work/shared/data/clothing-small")
    parser.add_argument("--num_splits", type=int, default=0)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--eval_size", type=int, default=288)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--features_file", type=Path)
    args = parser.parse_args()

    dataset = data.scan_image_folder(args.dataset_dir,
                                     work_dir=Path(tempfile.mkdtemp(prefix="bench_views_")),
                                     make_splits=not args.num_splits)
    pool = dataset.pooled()
    task = SingleLabelTask(dataset.labels)
    labels = pool.targets  # class ids
    if args.features_file and args.features_file.exists():
        feats = dict(np.load(args.features_file))
    else:
        print(f"features of {len(pool)} images, {2 + args.views + 1} views:", flush=True)
        feats = compute_views(list(pool.paths), args.views, args.eval_size, args.batch_size)
        if args.features_file:
            np.savez(args.features_file, **feats)
    if args.num_splits:
        plans = [task.split(labels, 0.1, 0.1, seed) for seed in range(args.num_splits)]
    else:  # the given folders, in the pool's order
        split_of = {src: s for s, split in dataset.splits.items() for src in split.sources}
        names = np.array([split_of[src] for src in pool.sources])
        plans = [{s: np.flatnonzero(names == s) for s in ("train", "validation", "test")}]

    views = [f"view{v}" for v in range(args.views)]
    big = f"eval{args.eval_size}"
    rows = [("stage 1 as today (eval crop)", ["eval"], ["eval"]),
            ("+ test-time flip", ["eval"], ["eval", "flip"]),
            (f"eval at {args.eval_size} px", ["eval"], [big]),
            ("train rows: eval + flip", ["eval", "flip"], ["eval"]),
            ("train rows: eval + flip, test-time flip", ["eval", "flip"], ["eval", "flip"]),
            (f"train rows: eval + flip + {args.views} views", ["eval", "flip"] + views, ["eval"]),
            (f"train rows: eval + flip + {args.views} views, test-time flip",
             ["eval", "flip"] + views, ["eval", "flip"]),
            (f"train rows: eval + flip + {args.views} views, eval at {args.eval_size} px",
             ["eval", "flip"] + views, [big]),
            (f"train rows: {args.views} views only", views, ["eval"])]
    results = {}
    for name, train_views, eval_views in rows:
        start = time.perf_counter()
        results[name] = np.array([score(task, feats, idx, train_views, eval_views, labels)
                                  for idx in plans])
        print(f"{name}: {results[name].mean(0).round(3)} ({time.perf_counter() - start:.0f} s)",
              flush=True)

    base = results[rows[0][0]]
    print(f"\n{args.dataset_dir}, {len(plans)} split(s); feature seconds per view: "
          + ", ".join(f"{k[8:]} {float(v):.0f}" for k, v in feats.items()
                      if k.startswith("seconds_")))
    print("| stage 1 | validation top-1 | test top-1 | splits beating today on validation |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        spread = (lambda c: f"{r[:, c].mean():.3f} ± {r[:, c].std():.3f}") if len(plans) > 1 \
            else (lambda c: f"{r[0, c]:.3f}")
        wins = int(np.sum(r[:, 0] > base[:, 0]))
        print(f"| {name} | {spread(0)} | {spread(1)} | {wins} of {len(plans)} |")


if __name__ == "__main__":
    main()
