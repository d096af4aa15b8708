"""What the refit after selection buys (issue 31), on photos neither model learned from: each run
uses ``--refit train_val`` on a split with a test part, so one run gives both figures side by side
on the same test photos — its ``metrics.json`` test figures are the model trained on the training
split (what ``--refit none`` exports) and ``refit.test`` is the export refit on training +
validation.

    PYTHONPATH=. python bench/bench_refit.py [--parts small,zalando,tags,attributes,season,\
grouped,random,small_stage2] [--out /tmp/bench_refit] [--seeds 0,1,2]

- ``small``: clothing-small, its given splits (187 test photos), stage 1 only.
- ``zalando``: Zalando brands, random stratified 70/15/15 splits, seeds 0..4, stage 1 only.
- ``tags`` / ``attributes``: the 37 clothing tags (sigmoid head) / the 26 garment attributes,
  random splits (validation 0.1, test 0.2), ``--seeds``, stage 1 only.
- ``season``: runway brands, each multi-season brand's newest season as the test split
  (``bench/bench_runway_splits.py``), the rest split by show, ``--seeds``, stage 1 only.
- ``grouped`` / ``random``: runway brands, the default fractions (0.1 / 0.1) split by show
  (``--group_by``) / at random, ``--seeds``, stage 1 only.
- ``small_stage2``: ``python -m runway_cnn.finetune --dataset_dir clothing-small --refit
  train_val`` (the default plan inside the default 10-minute budget, stage 2 included).
- ``small_kinds`` / ``tags_kinds`` / ``zalando_kinds``: clothing-small (its splits) / the tags
  (seed 0's split) / Zalando brands (seed 0's split), stage 2 for 1 / 3 / 2 epochs at 224 px
  without a budget; when it is kept, both refits after it from the same selected model: the
  head on the fine-tuned backbone's features against stage 1 + stage 2 again on training +
  validation, each scored on the test split.

Stage-1 parts share one feature pass per dataset (kept in ``OUT/<dataset>/``), so the runs cost
only the heads; stage 1 is deterministic (L-BFGS), so machine load moves only the times. Every
part writes ``OUT/<part>.json``; a part whose file exists is not run again.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench_time_budget import run_parts

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
ATTRIBUTES = DATA / "clothing-attributes"
SHOW = r"^([^/]+/[A-Za-z]+[0-9]+)_"


class Shared:
    """A dataset scanned once, its backbone built once and the frozen features of every image
    computed once; :meth:`run` trains one stage-1 run on a split of it."""

    def __init__(self, work: Path, **settings):
        sys.path.insert(0, str(REPO))
        from runway_cnn import FinetuneConfig
        from runway_cnn.training.datasets import load_dataset
        from runway_cnn.training.experiments import SharedWork

        work.mkdir(parents=True, exist_ok=True)
        self.config = FinetuneConfig(train_dir=str(work), verbose=0, stage2_epochs=0,
                                     refit="train_val", **settings)
        self.dataset, self.task = load_dataset(self.config, work / "scan")
        self.pool = self.dataset.pooled()
        self.shared = SharedWork(self.config, self.pool, work)

    def run(self, train_dir: Path, seed: int, split: dict | None) -> dict:
        """One run (the dataset's own splits when ``split`` is None): the test figures of the
        training-split model and of the export refit on training + validation."""
        from runway_cnn.training.trainer import FineTuner

        config = dataclasses.replace(self.config, train_dir=str(train_dir), seed=seed)
        self.shared.reset_backbone()
        dataset = self.dataset if split is None else self.dataset.resplit(split)
        tuner = FineTuner(config, dataset=dataset, backbone=self.shared.backbone,
                          features=self.shared.features)
        metrics = (tuner.finished() or tuner.run()).metrics
        figure = self.task.summary_figures[0]
        refit = metrics["refit"]
        return {"seed": seed, "figure": figure, "none": metrics["test"][figure],
                "train_val": refit["test"][figure], "num_train": refit["images_by_split"]["train"],
                "num_refit": refit["images"], "num_test": metrics["test"]["num_examples"],
                "refit_seconds": refit["seconds"],
                "stage1_seconds": metrics["stages"]["stage1"]["seconds"]}


def runs(shared: Shared, out: Path, name: str, seeds: list[int], split) -> dict:
    rows = []
    for seed in seeds:
        rows.append(shared.run(out / name / f"run_{seed:02d}", seed, split(seed)))
        r = rows[-1]
        print(f"{name} seed {seed}: {r['figure']} none {r['none']:.3f}, train_val "
              f"{r['train_val']:.3f} ({r['num_train']} → {r['num_refit']} photos, test "
              f"{r['num_test']}; refit {r['refit_seconds']:.1f} s)", flush=True)
    summary = {}
    for key in ("none", "train_val"):
        values = np.array([r[key] for r in rows])
        summary[key] = {"mean": float(values.mean()),
                        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    gains = np.array([r["train_val"] - r["none"] for r in rows])
    summary["gain"] = {"mean": float(gains.mean()), "min": float(gains.min()),
                       "max": float(gains.max())}
    return {"runs": rows, "summary": summary}


def random_split(shared: Shared, validation: float, test: float, grouped: bool = False):
    groups = shared.pool.groups if grouped else None
    return lambda seed: shared.task.split(shared.pool.targets, validation, test, seed,
                                          groups=groups)


def refit_kinds(shared: Shared, out: Path, epochs: int, name: str = "refit_kinds",
                split: dict | None = None) -> dict:
    """After a kept stage 2 (``epochs`` epochs, no budget), both refits from the same selected
    model, side by side on the test photos: the head on the fine-tuned backbone's features, and
    stage 1 + stage 2 again on training + validation (what a run without a budget does)."""
    from runway_cnn.training.callbacks import load_model_weights
    from runway_cnn.training.trainer import FineTuner

    config = dataclasses.replace(shared.config, train_dir=str(out / name),
                                 stage2_epochs=epochs, time_budget=0)
    shared.shared.reset_backbone()
    dataset = shared.dataset if split is None else shared.dataset.resplit(split)
    tuner = FineTuner(config, dataset=dataset, backbone=shared.shared.backbone,
                      features=shared.shared.features)
    figure = shared.task.summary_figures[0]
    start = time.perf_counter()
    stage1 = tuner.stage1()
    stage2 = tuner.stage2(tuner._monitored(stage1["validation"]))
    figures = tuner.select()
    monitor = tuner.task.monitor
    result = {"figure": figure, "stage1_validation": tuner._monitored(stage1["validation"]),
              "stage2": {k: stage2.get(k) for k in ("improved_on_stage1", "seconds",
                                                    f"best_{monitor}")},
              "selected_test": figures["test"][figure],
              "selection_seconds": time.perf_counter() - start}
    if not tuner._backbone_changed:
        return {**result, "note": "stage 2 not kept: no refit after stage 2 to compare"}
    union = tuner._refit_split()
    selected = tuner.files.stage("stage2").final_weights
    for kind in ("head", "whole_model"):
        load_model_weights(tuner.model, selected)
        tuner._backbone_changed = True
        start = time.perf_counter()
        if kind == "head":
            record = tuner._refit_after_stage2(union, stage2)
        else:
            stage_dir = tuner.files.stage("refit")
            stage_dir.path.mkdir(parents=True, exist_ok=True)
            (stage_dir.plan).write_text(json.dumps({"whole_model": True, "epochs": epochs}))
            record = tuner._refit_whole_model(union, stage1, stage2, stage_dir)
        result[kind] = {"refit": record.get("refit"), "why": record.get("why"),
                        "seconds": time.perf_counter() - start,
                        "test": tuner.evaluate("test")[figure] if record.get("refit")
                        else figures["test"][figure]}
        print(f"refit after stage 2, {kind}: test {figure} {result[kind]['test']:.3f} "
              f"({result[kind]['seconds']:.0f} s)", flush=True)
    return result


def small_stage2(out: Path) -> dict:
    train_dir = out / "small_stage2"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runway_cnn.finetune", "--dataset_dir",
                    str(DATA / "clothing-small"), "--train_dir", str(train_dir), "--refit",
                    "train_val", "--verbose", "2"], check=True, cwd=REPO)
    metrics = json.loads((train_dir / "metrics.json").read_text())
    stage2, refit = metrics["stages"]["stage2"], metrics["refit"]
    return {"wall_seconds": time.perf_counter() - start,
            "none": metrics["test"]["top1"], "train_val": refit.get("test", {}).get("top1"),
            "validation": metrics["validation"]["top1"], "stage2_kept":
                stage2.get("improved_on_stage1"), "plan": stage2.get("plan"), "refit": refit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="small,zalando,tags,attributes,season,grouped,random,"
                                           "small_stage2")
    parser.add_argument("--out", default="/tmp/bench_refit")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    cache: dict[str, Shared] = {}

    def shared(name: str, **settings) -> Shared:
        if name not in cache:
            cache[name] = Shared(out / name, **settings)
        return cache[name]

    def small():
        return runs(shared("clothing-small", dataset_dir=str(DATA / "clothing-small")), out,
                    "small", [0], lambda seed: None)

    def zalando_data() -> Shared:
        return shared("zalando", dataset_dir=str(DATA / "zalando-dresses" / "brands"))

    def zalando():
        return runs(zalando_data(), out, "zalando", list(range(5)),
                    random_split(zalando_data(), 0.15, 0.15))

    def tags_data() -> Shared:
        return shared("tags", dataset_dir=str(ATTRIBUTES / "images"),
                      labels_csv=str(ATTRIBUTES / "multilabel.csv"), task="multi_label")

    def tags():
        return runs(tags_data(), out, "tags", seeds, random_split(tags_data(), 0.1, 0.2))

    def attributes():
        data = shared("attributes", dataset_dir=str(ATTRIBUTES / "images"),
                      labels_csv=str(ATTRIBUTES / "attributes.csv"), task="attributes")
        return runs(data, out, "attributes", seeds, random_split(data, 0.1, 0.2))

    def runway() -> Shared:
        return shared("runway", dataset_dir=str(DATA / "runway-brands"), group_by=SHOW)

    def season():
        from bench.bench_runway_splits import season_split

        data = runway()
        return runs(data, out, "season", seeds,
                    lambda seed: season_split(data.pool.sources, data.pool.targets, seed))

    parts = {
        "small": small, "zalando": zalando, "tags": tags, "attributes": attributes,
        "season": season,
        "grouped": lambda: runs(runway(), out, "grouped", seeds,
                                random_split(runway(), 0.1, 0.1, grouped=True)),
        "random": lambda: runs(runway(), out, "random", seeds, random_split(runway(), 0.1, 0.1)),
        "small_stage2": lambda: small_stage2(out),
        "small_kinds": lambda: refit_kinds(shared("clothing-small", dataset_dir=str(
            DATA / "clothing-small")), out, 1),
        "tags_kinds": lambda: refit_kinds(tags_data(), out, 3, "tags_kinds",
                                          random_split(tags_data(), 0.1, 0.2)(0)),
        "zalando_kinds": lambda: refit_kinds(zalando_data(), out, 2, "zalando_kinds",
                                             random_split(zalando_data(), 0.15, 0.15)(0)),
    }
    run_parts(parts, args.parts.split(","), out)


if __name__ == "__main__":
    main()
