"""Does ``--time_budget`` hold when the machine gets busy after the plan (issue 32)?

    PYTHONPATH=. python bench/bench_budget_load.py --parts sample_quiet,sample_busy,\
small_quiet,small_busy [--out /tmp/bench_budget_load]

Each part is the CLI's default fine-tune in a fresh train dir: ``sample`` the README's main job
(``datasets/clothing-sample``, ``--time_budget 2``), ``small`` the shared ``clothing-small``
(its default 10-minute budget). ``busy`` starts two processes that keep both cores busy (a
Python loop each) the moment the run prints its stage-2 plan, and stops them when the run ends.

Each part records, from the run's printed lines (timed as they arrive) and its files:

- ``stage2_after_plan``: seconds from the plan line to the line that ends stage 2, against
  ``plan_seconds``, the seconds the plan said it had left (the goal: at most × 1.05);
- ``charged``: the run's wall seconds less its set-up (building the backbone, caching the
  decoded photos: not charged), against the budget and against the budget × 1.05 + the final
  evaluation, refit and export (the goal);
- the plan, whether and where the budget stopped stage 2, the seconds by part, the figures.

Every part writes ``OUT/<part>.json``; a part whose file exists is not run again.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_time_budget import REPO, SMALL, run_parts

SAMPLE = REPO / "datasets" / "clothing-sample"
HOG = "while True: pass"


def run(out: Path, name: str, dataset: Path, budget: float, busy: bool,
        *extra: str) -> dict:
    """One fine-tune, with two core-hogs from its stage-2 plan on when ``busy``."""
    train_dir = out / name
    command = [sys.executable, "-m", "runway_cnn.finetune", "--dataset_dir", str(dataset),
               "--train_dir", str(train_dir), "--time_budget", str(budget), "--verbose", "0",
               *extra]
    hogs: list[subprocess.Popen] = []
    lines: list[tuple[float, str]] = []
    start = time.monotonic()
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        for line in process.stdout:
            lines.append((time.monotonic() - start, line.rstrip()))
            print(line, end="", flush=True)
            if busy and not hogs and line.startswith("stage 2 plan:"):
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
    wall = time.monotonic() - start
    for hog in hogs:
        hog.kill()
    if process.returncode:
        raise SystemExit(f"{name}: the run failed (exit {process.returncode})")
    metrics = json.loads((train_dir / "metrics.json").read_text())
    stage2 = metrics["stages"]["stage2"]
    plan = stage2.get("plan") or {}
    planned = next((t for t, line in lines if line.startswith("stage 2 plan:")), None)
    ended = next((t for t, line in lines if line.startswith(("stage 2: best", "stage 2 skipped"))),
                 None)
    seconds = metrics.get("seconds", {})
    setup = seconds.get("backbone", 0.0) + seconds.get("image_cache", 0.0)
    final = sum(seconds.get(k, 0.0) for k in ("evaluation", "refit", "export"))
    charged = wall - setup
    after_plan = None if planned is None or ended is None else ended - planned
    return {
        "command": " ".join(command[1:]), "busy_after_plan": busy, "wall_seconds": wall,
        "seconds": seconds, "charged": charged, "budget_seconds": 60 * budget,
        "charged_within_budget_x105_plus_final": charged <= 60 * budget * 1.05 + final,
        "plan": plan, "plan_seconds": plan.get("budget_seconds"),
        "stage2_after_plan": after_plan,
        "stage2_within_plan_x105": (None if after_plan is None or not plan.get("budget_seconds")
                                    else after_plan <= 1.05 * plan["budget_seconds"]),
        "stopped_by_budget_after": stage2.get("stopped_by_budget_after"),
        "stopped_by_budget_at_batch": stage2.get("stopped_by_budget_at_batch"),
        "stage2_kept": stage2.get("improved_on_stage1"),
        "validation": metrics["validation"]["top1"], "test": metrics["test"]["top1"],
        "lines": [line for _, line in lines if line.startswith(("stage 2", "seconds:"))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="sample_quiet,sample_busy,small_quiet,small_busy")
    parser.add_argument("--out", default="/tmp/bench_budget_load")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {
        "sample_quiet": lambda: run(out, "sample_quiet", SAMPLE, 2, False),
        "sample_busy": lambda: run(out, "sample_busy", SAMPLE, 2, True),
        "small_quiet": lambda: run(out, "small_quiet", SMALL, 10, False),
        "small_busy": lambda: run(out, "small_busy", SMALL, 10, True),
    }
    run_parts(parts, args.parts.split(","), out)


if __name__ == "__main__":
    main()
