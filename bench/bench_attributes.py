"""Garment attributes on real photos: the Clothing Attribute Dataset's 26 attributes
(``../shared/data/clothing-attributes/attributes.csv``, 1,578 photos, unknown cells where the
annotators disagreed) and the Zalando dresses' attribute columns
(``../shared/data/zalando-dresses/labels.csv``, every column but brand), each with
``--balance none`` and ``--balance oversample``, through the package's own ``--num_splits``
experiment (EfficientNet-Lite0, stage 1 on cached features, stage 2 off as on every CPU run).
Then the stage-1 cost of all attributes against the single-label stage 1 on the same images and
features (gender, known for nearly every Clothing Attribute photo).

    python bench/bench_attributes.py [--out /tmp/bench_attributes] [--splits 3]
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.tasks import AttributeTask, SingleLabelTask, labels_for_run
from runway_cnn.training.features import extract_features

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {  # name → (image folder, labels CSV, --attributes)
    "clothing-attributes": (DATA / "clothing-attributes" / "images",
                            DATA / "clothing-attributes" / "attributes.csv", None),
    "zalando-dresses": (DATA / "zalando-dresses" / "images",
                        DATA / "zalando-dresses" / "labels.csv",
                        "category,color,collar,neckline,pattern,length,sleeve_length,fit,style"),
}


def run_experiments(out: Path, splits: int, names: list[str], balances: list[str]) -> dict:
    results = {}
    for name in names:
        images, labels_csv, attributes = DATASETS[name]
        for balance in balances:
            start = time.perf_counter()
            summary = fine_tune(FinetuneConfig(
                dataset_dir=str(images), labels_csv=str(labels_csv), task="attributes",
                attributes=attributes, balance=balance, train_dir=str(out / f"{name}_{balance}"),
                num_splits=splits, validation_fraction=0.1, test_fraction=0.2,
                verbose=0)).metrics
            agg = summary["aggregate"]
            key = f"{name} {balance}"
            results[key] = {"aggregate": agg, "per_attribute": summary["combined"]["per_attribute"],
                            "wall_seconds": time.perf_counter() - start}
            print(f"{key:32s} accuracy {agg['accuracy']['mean']:.3f} ± {agg['accuracy']['std']:.3f}"
                  f" (majority {agg['majority_accuracy']['mean']:.3f})  macro-F1 "
                  f"{agg['macro_f1']['mean']:.3f} ± {agg['macro_f1']['std']:.3f}  balanced "
                  f"{agg['balanced_accuracy']['mean']:.3f} ± {agg['balanced_accuracy']['std']:.3f}"
                  f"  stage 1 {agg['stage1_seconds']['mean']:.1f} s/run  wall "
                  f"{results[key]['wall_seconds']:.0f} s", flush=True)
            for a, m in results[key]["per_attribute"].items():
                print(f"    {a:16s} acc {m['accuracy']:.3f} ± {m['accuracy_std']:.3f} (majority "
                      f"{m['majority_accuracy']:.3f})  macro-F1 {m['macro_f1']:.3f} ± "
                      f"{m['macro_f1_std']:.3f} ({m['majority_macro_f1']:.3f})  balanced "
                      f"{m['balanced_accuracy']:.3f} ({m['majority_balanced_accuracy']:.3f})",
                      flush=True)
    return results


def stage1_ratio(attribute: str = "gender") -> dict:
    """Single-label (one ``attributes.csv`` column) and all attributes' stage 1 on the same
    images (those with that column known) and cached features, the same split, timed in one
    run."""
    images, labels_csv, _ = DATASETS["clothing-attributes"]
    with labels_csv.open() as f:
        rows = [r for r in csv.DictReader(f) if r[attribute]]
    backbone = get_backbone("efficientnet_lite0")
    features = extract_features(backbone, [str(images / r["filename"]) for r in rows], 32)
    single = SingleLabelTask(SingleLabelTask.label_space([r[attribute] for r in rows]))
    raw = [AttributeTask.raw_label(r) for r in rows]
    attributes = AttributeTask(labels_for_run("attributes", raw, {"min_count": 5}))
    y_single = single.targets([r[attribute] for r in rows], "attributes.csv")
    y_attributes = attributes.targets(raw, "attributes.csv")
    index = single.split(y_single, 0.1, 0.1, seed=0)
    train, val = index["train"], index["validation"]
    attributes.prepare(y_attributes[train])
    seconds = {}
    for task, y in ((single, y_single), (attributes, y_attributes)):
        head = task.build_head(features.shape[1])
        start = time.perf_counter()
        task.fit_head_convex(head, features[train], y[train], features[val], y[val])
        seconds[task.name] = time.perf_counter() - start
    return {"attribute": attribute, "images": len(rows), "attributes": len(attributes.attributes),
            "values": len(attributes.labels), "seconds": seconds,
            "ratio": seconds["attributes"] / seconds["single_label"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_attributes"))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--balances", default="none,oversample")
    parser.add_argument("--ratio_only", action="store_true", help="only the stage-1 timings")
    args = parser.parse_args()
    ratio = stage1_ratio()
    print(f"stage 1 on the same {ratio['images']} images' cached features: single-label "
          f"({ratio['attribute']}) {ratio['seconds']['single_label']:.1f} s, attributes "
          f"({ratio['attributes']} attributes, {ratio['values']} values) "
          f"{ratio['seconds']['attributes']:.1f} s: ratio {ratio['ratio']:.2f}", flush=True)
    if args.ratio_only:
        return
    results = run_experiments(args.out, args.splits, args.datasets.split(","),
                              args.balances.split(","))
    (args.out / "results.json").write_text(json.dumps({"experiments": results,
                                                       "stage1": ratio}, indent=1))


if __name__ == "__main__":
    main()
