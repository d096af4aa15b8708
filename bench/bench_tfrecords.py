"""Images per second through the same input pipeline: a dataset folder vs its TFRecords.

    PYTHONPATH=. python bench/bench_tfrecords.py [--dataset_dir /work/shared/data/clothing-small] \
        [--num_shards 8] [--rounds 3]

Converts the folder once (``python -m runway_cnn.datasets convert``'s code, timed), then, in
alternating rounds, reads the training split both ways through the package's pipelines: the eval
pass (decode + central crop, in order: what the feature pass reads) and one uncached, augmented,
shuffled training epoch (what a large dataset's stage 2 reads). No model runs: this is the input
side alone. Prints medians.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from runway_cnn.backbones.factory import BACKBONES
from runway_cnn.data import pipeline
from runway_cnn.data.preprocessing import Augmentation, PreprocessingSpec
from runway_cnn.data.tfrecords import read_tfrecord_dataset
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.training.datasets import convert_dataset, load_dataset


def rate(count: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_dir", default="/work/shared/data/clothing-small")
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_tfrecords_"))
    config = FinetuneConfig(dataset_dir=args.dataset_dir, train_dir=str(work / "run"))
    start = time.perf_counter()
    convert_dataset(work / "records", args.num_shards, config)
    convert_seconds = time.perf_counter() - start
    folder, _ = load_dataset(config, work / "scan")
    records, _ = read_tfrecord_dataset(work / "records")
    spec = PreprocessingSpec(BACKBONES.get("efficientnet_lite0").image_size)
    sources = {"folder": folder.splits["train"], "tfrecords": records.splits["train"]}
    n = len(sources["folder"])
    results = {(k, what): [] for k in sources for what in ("eval", "train")}
    for _ in range(args.rounds):
        for name, split in sources.items():
            results[name, "eval"].append(rate(n, lambda: pipeline.eval_crops(
                split.paths, spec, args.batch_size)))
            ds = pipeline.train_dataset(split.paths, split.targets, spec, args.batch_size,
                                        Augmentation(), seed=0, cache=False)
            results[name, "train"].append(rate(n, lambda: [None for _ in ds]))
    total = sum(len(s) for s in folder.splits.values())
    print(f"{args.dataset_dir}: {total} images converted into {args.num_shards} shards a split "
          f"in {convert_seconds:.1f} s; training split {n} images, {args.rounds} rounds")
    print("| pass | folder (img/s) | TFRecords (img/s) | ratio |")
    print("|---|---:|---:|---:|")
    for what, label in (("eval", "eval crops in order (the feature pass's input)"),
                        ("train", "uncached augmented training epoch")):
        a, b = np.median(results["folder", what]), np.median(results["tfrecords", what])
        print(f"| {label} | {a:.0f} | {b:.0f} | {b / a:.2f}× |")


if __name__ == "__main__":
    main()
