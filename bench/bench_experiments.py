"""Repeated-split experiments: what sharing work between runs saves, and the paper's protocol.

    PYTHONPATH=. python bench/bench_experiments.py compare [--runs 10] [--stage2_epochs 0]
    PYTHONPATH=. python bench/bench_experiments.py paper [--dataset_dir D] [--stage2_epochs N]
        [other python -m runway_cnn.finetune flags]

``compare``: ``python -m runway_cnn.finetune --num_splits N`` against N separate
``python -m runway_cnn.finetune --seed i`` commands (one process each, as a user would run them)
on the shipped ``clothing-sample`` dataset, default backbone. So that both sides train on the very
same splits, the dataset's train/ validation/ test/ folders are first pooled into a flat copy
(class folders only): split i of the experiment is then exactly the split of ``--seed i``. Prints
each side's wall time, the ratio and the per-run test top-1 of both sides.

``paper``: the brand-classification paper's protocol (10 random stratified splits, mean ± std of
top-1 / top-5) with the default backbone on ``/work/shared/data/zalando-dresses/brands`` (841
photos, 11 brands); copies the summed test confusion matrix and the box plot into ``docs/``.

Work goes to ``--work_dir`` (default ``runs/bench_experiments``, ignored by git); a killed run
started again with the same flags resumes. Each part also writes ``<work_dir>/<part>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "datasets" / "clothing-sample"
BRANDS = Path("/work/shared/data/zalando-dresses/brands")


def finetune(args: list[str], log: Path) -> float:
    """Runs ``python -m runway_cnn.finetune ARGS`` (output to ``log``); returns its wall time."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run([sys.executable, "-m", "runway_cnn.finetune", *args], cwd=REPO, env=env,
                       stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def flat_copy(dataset: Path, target: Path) -> Path:
    """``dataset/<split>/<class>/x`` → ``target/<class>/x`` (all splits pooled)."""
    if target.exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for src in sorted(dataset.glob("*/*/*")):
        dst = tmp / src.parent.name / src.name
        if dst.exists():
            raise SystemExit(f"{src.name} occurs in two splits of {src.parent.name}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    tmp.rename(target)
    return target


def compare(args: argparse.Namespace) -> dict:
    work = Path(args.work_dir) / "compare"
    flat = flat_copy(SAMPLE, work / "clothing-sample-flat")
    stage2 = 0 if args.stage2_epochs is None else args.stage2_epochs
    common = ["--dataset_dir", str(flat), "--stage2_epochs", str(stage2), "--verbose", "0"]
    experiment_cmd = [*common, "--train_dir", str(work / "experiment"),
                      "--num_splits", str(args.runs)]
    experiment_seconds = finetune(experiment_cmd, work / "logs" / "experiment.log")
    separate_seconds, separate_top1 = [], []
    for seed in range(args.runs):
        train_dir = work / "separate" / f"seed_{seed:02d}"
        separate_seconds.append(finetune([*common, "--train_dir", str(train_dir), "--seed",
                                          str(seed)], work / "logs" / f"seed_{seed:02d}.log"))
        metrics = json.loads((train_dir / "metrics.json").read_text())
        separate_top1.append(metrics["test"]["top1"])
    summary = json.loads((work / "experiment" / "summary.json").read_text())
    result = {
        "experiment_command": "python -m runway_cnn.finetune " + " ".join(experiment_cmd),
        "separate_command": "python -m runway_cnn.finetune " + " ".join(
            [*common, "--train_dir", "<dir>", "--seed", "<i>"]),
        "runs": args.runs, "experiment_seconds": experiment_seconds,
        "separate_seconds": sum(separate_seconds), "separate_each": separate_seconds,
        "ratio": sum(separate_seconds) / experiment_seconds,
        "experiment_top1": [r["top1"] for r in summary["runs"]], "separate_top1": separate_top1,
        "experiment_summary": {k: summary[k] for k in ("aggregate", "shared_seconds",
                                                       "total_seconds")},
    }
    (Path(args.work_dir) / "compare.json").write_text(json.dumps(result, indent=1))
    print(f"--num_splits {args.runs}: {experiment_seconds:.1f} s; {args.runs} separate runs: "
          f"{sum(separate_seconds):.1f} s; ratio {result['ratio']:.2f}x")
    print("test top1 per split (experiment / separate):")
    for i, (a, b) in enumerate(zip(result["experiment_top1"], separate_top1)):
        print(f"  {i}: {a:.3f} / {b:.3f}")
    return result


def paper(args: argparse.Namespace, extra: list[str]) -> dict:
    work = Path(args.work_dir) / "paper"
    cmd = ["--dataset_dir", str(args.dataset_dir), "--train_dir", str(work / "brands"),
           "--num_splits", "10", "--verbose", "0", *extra]
    if args.stage2_epochs is not None:
        cmd += ["--stage2_epochs", str(args.stage2_epochs)]
    seconds = finetune(cmd, work / "logs" / "paper.log")
    summary = json.loads((work / "brands" / "summary.json").read_text())
    docs = REPO / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copy(work / "brands" / "confusion_matrix.png", docs / "zalando_brands_confusion.png")
    shutil.copy(work / "brands" / "split_accuracy.png", docs / "zalando_brands_splits.png")
    result = {"command": "python -m runway_cnn.finetune " + " ".join(cmd),
              "wall_seconds": seconds, **summary}
    (Path(args.work_dir) / "paper.json").write_text(json.dumps(result, indent=1))
    agg = summary["aggregate"]
    print(f"{summary['runs_finished']} splits: top1 {agg['top1']['mean']:.3f} ± "
          f"{agg['top1']['std']:.3f}, top5 {agg['top5']['mean']:.3f} ± {agg['top5']['std']:.3f}, "
          f"macro-F1 {agg['macro_f1']['mean']:.3f} ± {agg['macro_f1']['std']:.3f}; "
          f"wall {seconds:.0f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("compare", "paper"))
    parser.add_argument("--work_dir", default=str(REPO / "runs" / "bench_experiments"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--stage2_epochs", type=int,
                        help="compare: default 0; paper: default the finetune default")
    parser.add_argument("--dataset_dir", default=str(BRANDS), help="paper only")
    args, extra = parser.parse_known_args()
    if args.part == "compare":
        compare(args)
    else:
        paper(args, extra)


if __name__ == "__main__":
    main()
