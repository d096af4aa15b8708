"""Stage 2 on by default, planned to fit ``--time_budget`` (issue 24): the default command on the
shared data, each part a fresh run with default settings unless it says otherwise.

    PYTHONPATH=. python bench/bench_time_budget.py --parts small,small_full,season,zalando,\
multilabel,mlgcn,attributes [--out /tmp/bench_time_budget] [--seeds 0,1,2] [--splits 2]

- ``small``: ``python -m runway_cnn.finetune --dataset_dir clothing-small`` (given splits), then
  retrieval: ``index build`` of ``train/`` with the run's export and with the ImageNet backbone,
  queries ``test/``, recall@1 (a hit: the same class).
- ``small_full``: the same with ``--stage2_sizes full`` (every epoch at 224 px: the
  progressive-resizing lever against none, same budget).
- ``season``: runway-brands, each multi-season brand's newest season held out (the split of
  ``bench/bench_runway_splits.py``), seeds ``--seeds``; the linear probe's figure on the same
  split is the run's stage 1 (``--stage2_epochs 0``), from that bench's ``season_split.json``
  when it is there.
- ``zalando``: Zalando brands, ``--num_splits`` ``--splits`` (the paper's protocol, fewer runs).
- ``multilabel`` / ``mlgcn``: the 37 clothing tags (sigmoid head, average pooling / ML-GCN, max
  pooling, BCE), one split (``--num_splits 1``, validation 0.1, test 0.2).
- ``attributes``: the 26 garment attributes, one split (validation 0.1, test 0.2).

Every part writes ``OUT/<part>.json``; a part whose file exists is not run again.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SMALL = DATA / "clothing-small"
ATTRIBUTES = DATA / "clothing-attributes"


def _stage2(metrics: dict) -> dict:
    stage2 = metrics["stages"]["stage2"]
    return {"plan": stage2.get("plan"), "kept": stage2.get("improved_on_stage1"),
            "stage1_validation": metrics["stages"]["stage1"]["validation"],
            "stopped_by_budget_after": stage2.get("stopped_by_budget_after"),
            "stage2_seconds": stage2.get("seconds")}


def small(out: Path, sizes: str = "auto") -> dict:
    from runway_cnn.inference.retrieval import build_image_index, evaluate_image_index

    train_dir = out / f"small_{sizes}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runway_cnn.finetune", "--dataset_dir", str(SMALL),
                    "--train_dir", str(train_dir), "--stage2_sizes", sizes, "--verbose", "2"],
                   check=True, cwd=REPO)
    wall = time.perf_counter() - start
    metrics = json.loads((train_dir / "metrics.json").read_text())
    result = {"wall_seconds": wall, "validation": metrics["validation"]["top1"],
              "test": metrics["test"]["top1"], **_stage2(metrics)}
    if sizes == "auto":
        for name, model in (("tuned", metrics["export_path"]), ("imagenet", "efficientnet_lite0")):
            build_image_index(model, SMALL / "train", out / f"{name}_index", progress=False)
            result[f"recall_{name}"] = evaluate_image_index(out / f"{name}_index", SMALL / "test",
                                                            backend="exact")
    return result


class SeasonSplit:
    """Runway brands with each multi-season brand's newest season held out (the split of
    ``bench/bench_runway_splits.py``): the backbone and the frozen features are built once and
    shared by every run."""

    def __init__(self, out: Path):
        sys.path.insert(0, str(REPO))
        from runway_cnn import FinetuneConfig
        from runway_cnn.training.datasets import load_dataset
        from runway_cnn.training.experiments import SharedWork

        features = Path("/tmp/bench/runway_exp")  # the grouped experiment's cached features
        self.config = FinetuneConfig(dataset_dir=str(DATA / "runway-brands"),
                                     train_dir=str(features), verbose=2)
        self.dataset, _ = load_dataset(self.config, out / "season_work")
        self.pool = self.dataset.pooled()
        self.shared = SharedWork(self.config, self.pool, features)
        probe = features / "season_split.json"
        self.probe = ({r["seed"]: r for r in json.loads(probe.read_text())["runs"]}
                      if probe.exists() else {})

    def run(self, train_dir: Path, seed: int, **settings) -> dict:
        """One fresh run on seed ``seed``'s split with ``settings``; its figures and plan."""
        from bench.bench_runway_splits import season_split
        from runway_cnn.training.trainer import FineTuner

        split = season_split(self.pool.sources, self.pool.targets, seed)
        run = dataclasses.replace(self.config, train_dir=str(train_dir), seed=seed, **settings)
        self.shared.reset_backbone()
        start = time.perf_counter()
        tuner = FineTuner(run, dataset=self.dataset.resplit(split),
                          backbone=self.shared.backbone, features=self.shared.features)
        metrics = (tuner.finished() or tuner.run()).metrics
        return {"test": metrics["test"]["top1"], "validation": metrics["validation"]["top1"],
                "seconds": time.perf_counter() - start, **_stage2(metrics)}


def season(out: Path, seeds: list[int]) -> dict:
    runway = SeasonSplit(out)
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for name, stage2 in (("probe", 0), ("default", None)):
            if name == "probe" and seed in runway.probe:
                row["probe"] = {"test": runway.probe[seed]["top1"],
                                "validation": runway.probe[seed]["validation_top1"]}
                continue
            row[name] = runway.run(out / f"season_{name}_{seed:02d}", seed, stage2_epochs=stage2)
        rows.append(row)
        print(f"season split, seed {seed}: probe {row['probe']['test']:.3f}, default "
              f"{row['default']['test']:.3f}", flush=True)
    return {"runs": rows}


def experiment(out: Path, name: str, **settings) -> dict:
    from runway_cnn import FinetuneConfig, fine_tune

    start = time.perf_counter()
    summary = fine_tune(FinetuneConfig(train_dir=str(out / name), verbose=2, **settings)).metrics
    return {"wall_seconds": time.perf_counter() - start, "summary": summary}


def run_parts(parts: dict[str, Callable[[], dict]], chosen: list[str], out: Path) -> None:
    """Runs each chosen part whose ``OUT/<part>.json`` is not there yet and writes that file
    (the part's result and its minutes)."""
    for part in chosen:
        path = out / f"{part}.json"
        if path.exists():
            continue
        start = time.perf_counter()
        result = parts[part]()
        result["part_seconds"] = time.perf_counter() - start
        path.write_text(json.dumps(result, indent=2, default=str))
        print(f"{part}: done in {result['part_seconds'] / 60:.1f} min", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="small,small_full,season,zalando,multilabel,"
                                           "mlgcn,attributes")
    parser.add_argument("--out", default="/tmp/bench_time_budget")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--splits", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    one_split = dict(num_splits=1, validation_fraction=0.1, test_fraction=0.2)
    parts = {
        "small": lambda: small(out),
        "small_full": lambda: small(out, "full"),
        "season": lambda: season(out, [int(s) for s in args.seeds.split(",")]),
        "zalando": lambda: experiment(out, "zalando", dataset_dir=str(
            DATA / "zalando-dresses" / "brands"), num_splits=args.splits),
        "multilabel": lambda: experiment(
            out, "multilabel", dataset_dir=str(ATTRIBUTES / "images"),
            labels_csv=str(ATTRIBUTES / "multilabel.csv"), task="multi_label", **one_split),
        "mlgcn": lambda: experiment(
            out, "mlgcn", dataset_dir=str(ATTRIBUTES / "images"),
            labels_csv=str(ATTRIBUTES / "multilabel.csv"), task="multi_label", head="mlgcn",
            pooling="max", **one_split),
        "attributes": lambda: experiment(
            out, "attributes", dataset_dir=str(ATTRIBUTES / "images"),
            labels_csv=str(ATTRIBUTES / "attributes.csv"), task="attributes", **one_split),
    }
    run_parts(parts, args.parts.split(","), out)


if __name__ == "__main__":
    main()
