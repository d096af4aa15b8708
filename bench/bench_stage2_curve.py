"""Accuracy against minutes of stage 2 on a CPU: the frozen floor (stage 1) and the stage-2
variants that fit minutes rather than hours, on one dataset, one run each, side by side.

    PYTHONPATH=. python bench/bench_stage2_curve.py [--dataset_dir …/clothing-small] [--seeds 0]
        [--variants top20,all] [--epochs 3] [--out runs/bench_stage2_curve]

The frozen backbone's features are computed once (timed) and shared through ``FineTuner``'s
``features`` hook, so every variant starts from the same stage 1 (the default: logistic
regression on standardised features, C on validation). Stage 2 then runs with the package's own
trainer (``--stage2_epochs --epochs``, early stopping and best-on-validation checkpointing as by
default); its per-epoch validation top-1 comes from the stage's ``history.csv`` and its minutes
from ``done.json`` (spread evenly over the epochs run). Test top-1 is of the weights the run
keeps. Writes ``results.json`` and ``docs/stage2_curve.png`` (validation top-1 against minutes of
the whole run: feature pass + stage 1 + stage 2).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from runway_cnn.backbones.factory import get_backbone
from runway_cnn.backbones.features import extract_features
from runway_cnn.data import folders as data
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.training.trainer import FineTuner

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = {  # name → (label, stage-2 settings)
    "top20": ("top 20 layers, peak 1e-4 (the GPU default)", {"unfreeze": "20"}),
    "all": ("whole backbone, peak 2e-4", {"unfreeze": "all", "stage2_learning_rate": 2e-4}),
}


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dataset = data.scan_image_folder(args.dataset_dir, work_dir=out)
    backbone = get_backbone("efficientnet_lite0")
    paths = [p for s in dataset.splits.values() for p in s.paths]
    start = time.perf_counter()
    features = dict(zip(paths, extract_features(backbone, paths, 32)))
    feature_seconds = time.perf_counter() - start
    initial = [w.copy() for w in backbone.model.get_weights()]
    results = {"dataset": str(args.dataset_dir), "images": len(paths),
               "feature_seconds": feature_seconds, "runs": []}
    for seed in args.seeds:
        for name in ["stage1"] + args.variants:
            backbone.model.set_weights(initial)  # every run starts from ImageNet
            settings = {} if name == "stage1" else {**VARIANTS[name][1],
                                                    "stage2_epochs": args.epochs}
            config = FinetuneConfig(dataset_dir=str(args.dataset_dir), seed=seed, verbose=0,
                                    train_dir=str(out / f"{name}_seed{seed}"),
                                    **{"stage2_epochs": 0, **settings})
            tuner = FineTuner(config, dataset=dataset, backbone=backbone, features=features)
            clock = time.perf_counter()
            result = tuner.run()
            seconds = time.perf_counter() - clock
            stages = result.metrics["stages"]
            curve = [(0.0, stages["stage1"]["validation"]["top1"])]
            history = tuner.files.stage("stage2").history
            if name != "stage1" and history.exists():
                with history.open() as f:
                    values = [float(row["val_top1"]) for row in csv.DictReader(f)]
                per_epoch = stages["stage2"]["seconds"] / len(values)
                curve += [((i + 1) * per_epoch, v) for i, v in enumerate(values)]
            row = {"variant": name, "seed": seed, "run_seconds": seconds,
                   "stage1_seconds": stages["stage1"]["seconds"],
                   "stage2": {k: v for k, v in stages["stage2"].items() if k != "validation"},
                   "validation_top1": result.metrics["validation"]["top1"],
                   "test_top1": result.metrics["test"]["top1"],
                   "curve": curve}
            results["runs"].append(row)
            print(f"{name} seed {seed}: validation {row['validation_top1']:.3f} test "
                  f"{row['test_top1']:.3f}, run {seconds:.0f} s (+ features "
                  f"{feature_seconds:.0f} s once); stage-2 validation by epoch "
                  f"{[round(v, 3) for _, v in curve[1:]]}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    base = results["feature_seconds"]
    colours = {"stage1": "black", "top20": "tab:blue", "all": "tab:red"}
    for row in results["runs"]:
        start = base + row["stage1_seconds"]
        x = [(start + s) / 60 for s, _ in row["curve"]]
        y = [v for _, v in row["curve"]]
        label = "stage 1 only (CPU default)" if row["variant"] == "stage1" else \
            f"+ stage 2: {VARIANTS[row['variant']][0]}"
        ax.plot(x, y, "o-", color=colours.get(row["variant"]), label=f"{label}, seed "
                f"{row['seed']}: test {row['test_top1']:.3f}")
    floor = results["runs"][0]["curve"][0][1]
    ax.axhline(floor, color="grey", ls=":", lw=1, label=f"stage-1 floor {floor:.3f}")
    ax.axhline(0.90, color="green", ls="--", lw=1, label="issue 14 goal: validation 0.90 …")
    ax.axvline(3.0, color="green", ls="--", lw=1, label="… within 3 minutes")
    ax.set_xlabel("minutes on 2 CPU cores (features + stage 1 + stage 2)")
    ax.set_ylabel("validation top-1")
    ax.set_title(f"{Path(results['dataset']).name}: validation top-1 against minutes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", type=Path, default=DATA / "clothing-small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/bench_stage2_curve")
    parser.add_argument("--plot_only", action="store_true",
                        help="redraw the PNG from --out's results.json")
    parser.add_argument("--png", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs" / "stage2_curve.png")
    args = parser.parse_args()
    results = (json.loads((Path(args.out) / "results.json").read_text()) if args.plot_only
               else run(args))
    plot(results, args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
