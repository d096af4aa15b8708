"""Multi-label styles on real photos: the Clothing Attribute Dataset's 37 tags
(``../shared/data/clothing-attributes/multilabel.csv``, 1,578 photos) with EfficientNet-Lite0,
3 iterative-stratification splits each, for sigmoid-average, sigmoid-max, ML-GCN (max pooling)
with BCE and with ASL — every variant through the package's own ``--num_splits`` experiment, the
same backbone and schedule (stage 1 on cached features; stage 2 off, the CPU default). Then the
stage-1 cost of multi-label against single-label on the same images and features (gender, the
one attribute known for nearly every photo), and the ML-GCN label graph as a PNG.

    python bench/bench_multilabel.py [--data ../shared/data/clothing-attributes] [--out /tmp/x]
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.backbones.features import extract_features
from runway_cnn.tasks import MultiLabelTask, SingleLabelTask
from runway_cnn.tasks.multi_label.plots import plot_label_matrix

VARIANTS = {  # name → settings
    "sigmoid-avg": dict(pooling="avg", head="sigmoid", loss="bce"),
    "sigmoid-max": dict(pooling="max", head="sigmoid", loss="bce"),
    "mlgcn-max bce": dict(pooling="max", head="mlgcn", loss="bce"),
    "mlgcn-max asl": dict(pooling="max", head="mlgcn", loss="asl"),
}


def run_variants(data: Path, out: Path, splits: int, names: list[str]) -> dict:
    results = {}
    for name in names:
        settings = VARIANTS[name]
        start = time.perf_counter()
        summary = fine_tune(FinetuneConfig(
            dataset_dir=str(data / "images"), labels_csv=str(data / "multilabel.csv"),
            task="multi_label", train_dir=str(out / name.replace(" ", "_")),
            num_splits=splits, validation_fraction=0.1, test_fraction=0.2, verbose=0,
            **settings)).metrics
        results[name] = {"summary": summary, "wall_seconds": time.perf_counter() - start}
        agg = summary["aggregate"]
        print(f"{name:14s} mAP {agg['map']['mean']:.3f} ± {agg['map']['std']:.3f}  CF1 "
              f"{agg['cf1']['mean']:.3f} ± {agg['cf1']['std']:.3f}  OF1 {agg['of1']['mean']:.3f}"
              f" ± {agg['of1']['std']:.3f}  stage 1 {agg['stage1_seconds']['mean']:.1f} s/run  "
              f"wall {results[name]['wall_seconds']:.0f} s", flush=True)
    return results


def stage1_ratio(data: Path, attribute: str) -> dict:
    """Single-label (an ``attributes.csv`` column) and multi-label (the 37 tags) stage 1 on the
    same images (those with the attribute known) and cached average-pooled features, the same
    80/10/10 split, timed in one run."""
    with (data / "attributes.csv").open() as f:
        single_raw = {r["filename"]: r[attribute] for r in csv.DictReader(f) if r[attribute]}
    with (data / "multilabel.csv").open() as f:
        tags = {r["filename"]: MultiLabelTask.raw_label(r) for r in csv.DictReader(f)}
    names = sorted(set(single_raw) & set(tags))
    backbone = get_backbone("efficientnet_lite0")
    features = extract_features(backbone, [str(data / "images" / n) for n in names], 32)
    single = SingleLabelTask(SingleLabelTask.label_space([single_raw[n] for n in names]))
    multi = MultiLabelTask(MultiLabelTask.label_space([tags[n] for n in names]))
    y_single = single.targets([single_raw[n] for n in names], "attributes.csv")
    y_multi = multi.targets([tags[n] for n in names], "multilabel.csv")
    index = single.split(y_single, 0.1, 0.1, seed=0)
    train, val = index["train"], index["validation"]
    seconds = {}
    for task, y in ((single, y_single), (multi, y_multi)):
        head = task.build_head(features.shape[1])
        start = time.perf_counter()
        task.fit_head_convex(head, features[train], y[train], features[val], y[val])
        seconds[task.name] = time.perf_counter() - start
    return {"attribute": attribute, "classes": len(single.labels), "images": len(names),
            "train": len(train), "seconds": seconds,
            "ratio": seconds["multi_label"] / seconds["single_label"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2]
                        / "shared" / "data" / "clothing-attributes")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_multilabel"))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--ratio_only", action="store_true", help="only the stage-1 timings")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    ratios = []
    for attribute in ("gender", "category"):
        ratio = stage1_ratio(args.data, attribute)
        ratios.append(ratio)
        print(f"stage 1 on the same {ratio['images']} images' cached features: single-label "
              f"({attribute}, {ratio['classes']} classes) {ratio['seconds']['single_label']:.1f} s,"
              f" multi-label (37 tags) {ratio['seconds']['multi_label']:.1f} s: ratio "
              f"{ratio['ratio']:.2f}", flush=True)
    if args.ratio_only:
        return
    results = run_variants(args.data, args.out, args.splits, args.variants.split(","))
    if "mlgcn-max bce" in results:
        run = args.out / "mlgcn-max_bce" / "split_00"
        task = json.loads((run / "metrics.json").read_text())["task"]
        plot_label_matrix(np.asarray(task["adjacency"]), task["labels"],
                          args.docs / "mlgcn_label_graph.png",
                          "ML-GCN label graph Â, clothing-attributes (split 0's training images)",
                          colorbar="weight")
    (args.out / "results.json").write_text(json.dumps(
        {"variants": {k: {"aggregate": v["summary"]["aggregate"],
                          "wall_seconds": v["wall_seconds"]} for k, v in results.items()},
         "stage1": ratios}, indent=1))


if __name__ == "__main__":
    main()
