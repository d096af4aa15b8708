"""Garment attributes on real photos: the Clothing Attribute Dataset's 26 attributes
(``../shared/data/clothing-attributes/attributes.csv``, 1,578 photos, unknown cells where the
annotators disagreed) and the Zalando dresses' attribute columns
(``../shared/data/zalando-dresses/labels.csv``, every column but brand), each with
``--balance none`` and ``--balance oversample``, through the package's own ``--num_splits``
experiment (EfficientNet-Lite0, stage 1 on cached features, stage 2 off as on every CPU run).
Then the stage-1 cost of all attributes against the single-label stage 1 on the same images and
features (gender, known for nearly every Clothing Attribute photo), and the recommendation demo:
one Clothing Attribute model (split seed 0, exported), an index of its training and validation
photos, its map and a query grid for three test photos, copied to ``docs/``.

    python bench/bench_attributes.py [--out /tmp/bench_attributes] [--splits 3]
        [--ratio_only | --recommend_only]
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.factory import get_backbone
from runway_cnn.backbones.features import extract_features
from runway_cnn.tasks import AttributeTask, SingleLabelTask, labels_for_run

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
                            "wall_seconds": time.perf_counter() - start,
                            "rare": rare_value_recall(out / f"{name}_{balance}")}
            print(f"{key:32s} accuracy {agg['accuracy']['mean']:.3f} ± {agg['accuracy']['std']:.3f}"
                  f" (majority {agg['majority_accuracy']['mean']:.3f})  macro-F1 "
                  f"{agg['macro_f1']['mean']:.3f} ± {agg['macro_f1']['std']:.3f}  balanced "
                  f"{agg['balanced_accuracy']['mean']:.3f} ± {agg['balanced_accuracy']['std']:.3f}"
                  f"  stage 1 {agg['stage1_seconds']['mean']:.1f} s/run  wall "
                  f"{results[key]['wall_seconds']:.0f} s  recall of rare values "
                  f"{results[key]['rare']['recall']:.3f} ({results[key]['rare']['rare_values']} "
                  "value-runs under 10 %)", flush=True)
            for a, m in results[key]["per_attribute"].items():
                print(f"    {a:16s} acc {m['accuracy']:.3f} ± {m['accuracy_std']:.3f} (majority "
                      f"{m['majority_accuracy']:.3f})  macro-F1 {m['macro_f1']:.3f} ± "
                      f"{m['macro_f1_std']:.3f} ({m['majority_macro_f1']:.3f})  balanced "
                      f"{m['balanced_accuracy']:.3f} ({m['majority_balanced_accuracy']:.3f})",
                      flush=True)
    return results


def rare_value_recall(experiment: Path, share: float = 0.1) -> dict:
    """Recall of the rare values (under ``share`` of their attribute's known test cells), pooled
    over the values and the runs of an experiment: what balancing is for."""
    recalls = []
    for metrics in sorted(experiment.glob("split_*/metrics.json")):
        for figures in json.loads(metrics.read_text())["test"]["per_attribute"].values():
            matrix = np.asarray(figures["confusion_matrix"], np.float64)
            support = matrix.sum(axis=1)
            for value in np.flatnonzero((support > 0) & (support < share * support.sum())):
                recalls.append(matrix[value, value] / support[value])
    return {"rare_values": len(recalls), "recall": float(np.mean(recalls))}


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


def recommend_demo(out: Path, docs: Path) -> dict:
    """Train, export, index all photos, query three test photos; the PNGs go to ``docs``."""
    from runway_cnn import build_attribute_index, query_attribute_index

    images, labels_csv, _ = DATASETS["clothing-attributes"]
    result = fine_tune(FinetuneConfig(dataset_dir=str(images), labels_csv=str(labels_csv),
                                      task="attributes", train_dir=str(out / "demo_model"),
                                      validation_fraction=0.1, test_fraction=0.2, verbose=0))
    splits = json.loads((out / "demo_model" / "splits.json").read_text())
    catalog = out / "demo_catalog"  # the photos the model trained and validated on
    shutil.rmtree(catalog, ignore_errors=True)
    catalog.mkdir()
    for row in splits["train"] + splits["validation"]:
        (catalog / row["source"]).symlink_to(images / row["source"])
    start = time.perf_counter()
    summary = build_attribute_index(result.export_path, catalog, out / "demo_index",
                                    color_by="category")
    seconds = time.perf_counter() - start
    queries = [images / t["source"] for t in splits["test"][:3]]
    answers = query_attribute_index(out / "demo_index", queries, k=4,
                          groups=["category", "neckline", "sleevelength"],
                          grid=out / "demo_index" / "query.png")
    docs.mkdir(exist_ok=True)
    shutil.copy(out / "demo_index" / "map.png", docs / "attribute_map.png")
    shutil.copy(out / "demo_index" / "query.png", docs / "recommend_query.png")
    figures = summary["map"]
    print(f"index of {summary['count']} photos in {seconds:.0f} s; autoencoder MSE "
          f"{figures['autoencoder']['reconstruction_mse']:.4f}, trustworthiness "
          f"{figures['autoencoder']['trustworthiness']:.3f}; PCA MSE "
          f"{figures['pca']['reconstruction_mse']:.4f}, trustworthiness "
          f"{figures['pca']['trustworthiness']:.3f}", flush=True)
    for answer in answers:
        print(answer["image"], [(Path(n["path"]).name, round(n["distance"], 3))
                                for n in answer["neighbours"]], flush=True)
    return {"index_seconds": seconds, "map": figures, "test_accuracy":
            result.metrics["test"]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_attributes"))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--balances", default="none,oversample")
    parser.add_argument("--ratio_only", action="store_true", help="only the stage-1 timings")
    parser.add_argument("--recommend_only", action="store_true", help="only the demo")
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    if args.recommend_only:
        recommend_demo(args.out, args.docs)
        return
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
