"""Stage 1 alone (the head on frozen features) per backbone / resolution / crop, over seeds.

    PYTHONPATH=. python bench/bench_frozen_features.py \
        [--dataset_dir /work/shared/data/clothing-small] [--model_name efficientnet_lite0] \
        [--image_size N] [--crop_fraction 0.875 | --squash] [--seeds 3] [--dropout 0.2] \
        [--learning_rate 1e-3] [--stage1_epochs 40] [--features_file F.npz]

Frozen features of every image are computed once (the eval transform: central square crop of
``--crop_fraction`` of the shorter side, or with ``--squash`` the whole photo resized to a square
as ``keras.utils.image_dataset_from_directory`` does), plus those of the mirrored validation and
test images. Then, per seed, the package's own stage 1 with ``--stage1_solver adam``
(``FineTuner`` with the features hook, stage 2 off) trains the head and picks its best epoch on
validation. Prints validation / test top-1 as mean ± std over the seeds, the same with test-time
flip averaging (mean of the probabilities of an image and its mirror), the feature pass's speed,
and stage 1 with the default ``--stage1_solver lbfgs`` on the same features: scikit-learn's
logistic regression with C chosen on validation (the issue's floor).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from runway_cnn.data import folders as data
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.data.pipeline import predict_in_order
from runway_cnn.data.preprocessing import PreprocessingSpec, decode_image
from runway_cnn.training.trainer import FineTuner


def squashed(paths: list[str], size: int, batch_size: int) -> tf.data.Dataset:
    """The whole photo resized to ``size`` × ``size`` (aspect ratio not kept), [0, 1]."""
    def load(path):
        image = decode_image(tf.io.read_file(path))
        return tf.clip_by_value(tf.image.resize(image, [size, size], antialias=True) / 255, 0, 1)
    return (tf.data.Dataset.from_tensor_slices(paths).map(load, tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_dir", default="/work/shared/data/clothing-small")
    parser.add_argument("--model_name", default="efficientnet_lite0")
    parser.add_argument("--image_size", type=int)
    parser.add_argument("--crop_fraction", type=float, default=0.875)
    parser.add_argument("--squash", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--stage1_epochs", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--features_file", type=Path,
                        help="keep the features in this .npz and reuse them when it exists")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_frozen_features_"))
    dataset = data.scan_image_folder(args.dataset_dir, work_dir=work)
    backbone = get_backbone(args.model_name, image_size=args.image_size)
    spec = backbone.preprocessing
    spec = PreprocessingSpec(spec.image_size, args.crop_fraction, spec.normalization)

    def features(paths: list[str], mirror: bool = False) -> np.ndarray:
        def predict(x):
            return backbone.model.predict_on_batch(x[:, :, ::-1] if mirror else x)
        if not args.squash:
            return predict_in_order(predict, paths, spec, args.batch_size)
        return np.concatenate([predict(x) for x in squashed(paths, spec.image_size,
                                                            args.batch_size)])

    every = [p for s in dataset.splits.values() for p in s.paths]
    if args.features_file and args.features_file.exists():
        saved = np.load(args.features_file)
        cached, rate = dict(zip(every, saved["every"])), float(saved["rate"])
        mirrored = {s: saved[s] for s in ("validation", "test")}
    else:
        start = time.perf_counter()
        cached = dict(zip(every, features(every)))
        rate = len(every) / (time.perf_counter() - start)
        mirrored = {s: features(dataset.splits[s].paths, mirror=True)
                    for s in ("validation", "test")}
        if args.features_file:
            np.savez(args.features_file, every=np.stack([cached[p] for p in every]), rate=rate,
                     **mirrored)

    def run_stage1(solver: str, seed: int) -> tuple[FineTuner, dict]:
        config = FinetuneConfig(dataset_dir=args.dataset_dir,
                                train_dir=str(work / f"{solver}{seed}"),
                                model_name=args.model_name, image_size=args.image_size,
                                stage1_solver=solver, stage1_epochs=args.stage1_epochs,
                                stage2_epochs=0, learning_rate=args.learning_rate,
                                dropout=args.dropout, batch_size=args.batch_size, seed=seed,
                                verbose=0)
        tuner = FineTuner(config, dataset=dataset, backbone=backbone, features=cached)
        return tuner, tuner.stage1()

    rows = []
    for seed in range(args.seeds):
        tuner, _ = run_stage1("adam", seed)
        row = []
        for name in ("validation", "test"):
            split = dataset.splits[name]
            plain = tuner.predict_probabilities(split)
            flipped = tuner.task.probabilities(tuner.head.predict(mirrored[name], verbose=0))
            row += [np.mean(plain.argmax(1) == split.labels),
                    np.mean((plain + flipped).argmax(1) == split.labels)]
        rows.append(row)
    rows = np.array(rows)
    regression, solved = run_stage1("lbfgs", 0)
    best = [regression.evaluate(name)["top1"] for name in ("validation", "test")]

    transform = "squash" if args.squash else f"crop {args.crop_fraction}"
    print(f"{args.model_name} {spec.image_size}px {transform}: features {rate:.1f} img/s")
    print("| stage 1 (head) | validation top-1 | test top-1 |")
    print("|---|---|---|")
    for label, col in (("plain", 0), ("flip-averaged", 1)):
        print(f"| {label}, {args.seeds} seeds | {rows[:, col].mean():.3f} ± {rows[:, col].std():.3f}"
              f" | {rows[:, col + 2].mean():.3f} ± {rows[:, col + 2].std():.3f} |")
    print(f"| logistic regression (--stage1_solver lbfgs, C={solved['solver']['C']}) "
          f"| {best[0]:.3f} | {best[1]:.3f} |")


if __name__ == "__main__":
    main()
