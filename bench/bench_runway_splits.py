"""Runway brands three ways: the paper's protocol (random splits), splits by show, and the newest
season of each brand held out — the figure a brand classifier earns on a collection it never saw.

    PYTHONPATH=. python bench/bench_runway_splits.py [--work_dir /tmp/bench/runway_exp]
        [--dataset_dir /work/shared/data/runway-brands] [--runs 10]

1. ``python -m runway_cnn.finetune --num_splits RUNS --group_by SHOW --compare_random_split``
   (default settings otherwise: stage 1 on a CPU): RUNS splits by show beside RUNS random
   stratified splits, in ``WORK_DIR``; skipped when ``WORK_DIR/summary.json`` is complete.
2. The season split, with the experiment's cached frozen features (no second feature pass): for
   each brand with looks from two or more seasons, its newest season is the test split; the
   other shows are split by show into training and validation (``validation_fraction`` 0.15,
   seeds 0..RUNS-1); the run is the package's own (``FineTuner`` on that split, default
   settings). Brands of one show are trained on only.

Prints both and writes ``WORK_DIR/season_split.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHOW = r"^([^/]+/[A-Za-z]+[0-9]+)_"
SEASONS = ("Fall23", "Spring24", "Fall24", "Spring25", "Fall25")  # oldest first


def experiment(dataset_dir: str, work_dir: Path, runs: int) -> dict:
    summary = work_dir / "summary.json"
    if not (summary.exists() and json.loads(summary.read_text()).get("complete")):
        subprocess.run([sys.executable, "-m", "runway_cnn.finetune", "--dataset_dir", dataset_dir,
                        "--num_splits", str(runs), "--group_by", SHOW, "--compare_random_split",
                        "--train_dir", str(work_dir), "--verbose", "0"], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(summary.read_text())


def season_split(sources: list[str], labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Test: the newest season of each brand with several; the rest split by show."""
    from runway_cnn.data.splits import stratified_split

    shows = np.array([re.match(SHOW, s).group(1) for s in sources], dtype=object)
    season = np.array([SEASONS.index(show.split("/")[1]) for show in shows])
    test = np.zeros(len(sources), bool)
    for label in np.unique(labels):
        mine = labels == label
        if len(set(season[mine].tolist())) > 1:
            test |= mine & (season == season[mine].max())
    rest = np.flatnonzero(~test)
    inner = stratified_split(labels[rest], 0.15, 0.0, seed, groups=shows[rest])
    return {"train": rest[inner["train"]], "validation": rest[inner["validation"]],
            "test": np.flatnonzero(test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default="/work/shared/data/runway-brands")
    parser.add_argument("--work_dir", default="/tmp/bench/runway_exp")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(args.work_dir)
    summary = experiment(args.dataset_dir, work, args.runs)

    from runway_cnn import FinetuneConfig
    from runway_cnn.training.datasets import load_dataset
    from runway_cnn.training.experiments import SharedWork
    from runway_cnn.training.trainer import FineTuner

    config = FinetuneConfig(dataset_dir=args.dataset_dir, train_dir=str(work), verbose=0)
    dataset, _ = load_dataset(config, work / "season_work")
    pool = dataset.pooled()
    shared = SharedWork(config, pool, work)  # the experiment's features.npy, memory-mapped
    rows = []
    for seed in range(args.runs):
        split = season_split(pool.sources, pool.targets, seed)
        run_config = dataclasses.replace(config, train_dir=str(work / f"season_{seed:02d}"),
                                         seed=seed)
        shared.reset_backbone()
        start = time.perf_counter()
        tuner = FineTuner(run_config, dataset=dataset.resplit(split), backbone=shared.backbone,
                          features=shared.features)
        metrics = (tuner.finished() or tuner.run()).metrics
        rows.append({"seed": seed, "num_train": len(split["train"]),
                     "num_validation": len(split["validation"]), "num_test": len(split["test"]),
                     "test_brands": int(len(np.unique(pool.targets[split["test"]]))),
                     "top1": metrics["test"]["top1"], "top5": metrics["test"]["top5"],
                     "validation_top1": metrics["validation"]["top1"],
                     "seconds": time.perf_counter() - start})
        print(f"season split, seed {seed}: test top-1 {rows[-1]['top1']:.3f} "
              f"({rows[-1]['num_test']} looks of {rows[-1]['test_brands']} brands)", flush=True)
    top1 = np.array([r["top1"] for r in rows])
    result = {"runs": rows, "top1_mean": float(top1.mean()),
              "top1_std": float(top1.std(ddof=1)) if len(top1) > 1 else 0.0}
    (work / "season_split.json").write_text(json.dumps(result, indent=2))
    grouped, random = summary["aggregate"]["top1"], summary["random_split"]["aggregate"]["top1"]
    print(f"random splits (the paper's protocol): top-1 {random['mean']:.3f} ± {random['std']:.3f}")
    print(f"splits by show:                       top-1 {grouped['mean']:.3f} ± {grouped['std']:.3f}")
    print(f"newest season held out:               top-1 {result['top1_mean']:.3f} ± "
          f"{result['top1_std']:.3f}")


if __name__ == "__main__":
    main()
