"""Peak memory (max RSS) of a fine-tune, an experiment and an index build as the dataset grows.

    PYTHONPATH=. python bench/bench_memory.py [--sizes 2000 20000 200000] [--image_size 224] \
        [--jobs finetune experiment index] [--work runs/bench_memory]

Synthetic class folders of ``size`` small JPEGs (64×48, 10 classes; 2,000 distinct images
written again under new names) and the tests' tiny TF-Hub backbone at ``--image_size``: the
point is what the package keeps in memory per image (decoded images, features, caches), not
the backbone's cost, so a backbone that runs thousands of images a second keeps 200k images
within minutes. Each job runs in its own process; its peak RSS comes from ``os.wait4``. Jobs:
``finetune`` (the default command: scan, feature pass, stage 1, evaluation, export),
``finetune_stage2`` (the same with one epoch of stage 2: the training and validation caches),
``experiment`` (``--num_splits 2``), ``index`` (``index build`` over the folder with the
fine-tune's export). Prints a markdown table and writes ``results.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_image  # noqa: E402
from tiny_models import make_tiny_hub_module  # noqa: E402

JOBS = {
    "finetune": "from runway_cnn.api import fine_tune; fine_tune({settings})",
    "finetune_stage2": "from runway_cnn.api import fine_tune; "
                       "fine_tune({settings}, stage2_epochs=1, unfreeze='all')",
    "experiment": "from runway_cnn.training.experiments import run_experiment; "
                  "run_experiment({settings}, num_splits=2)",
    "index": "from runway_cnn.inference.retrieval import build_image_index; "
             "build_image_index({export!r}, {data!r}, {out!r}, progress=False)",
}


def make_folder(root: Path, count: int) -> Path:
    """``count`` JPEGs in 10 class folders (made once)."""
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(0)
    distinct = []
    for i in range(2000):
        buffer = io.BytesIO()
        make_image(i % 10, (64, 48), rng).save(buffer, "JPEG", quality=85)
        distinct.append(buffer.getvalue())
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"class{i % 10}" / f"{i:07d}.jpg").write_bytes(distinct[i % 2000])
    done.touch()
    return root


def peak_rss(code: str) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of ``python -c code``."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{code[:80]}… failed:\n{process.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000])
    parser.add_argument("--jobs", nargs="+", default=["finetune", "finetune_stage2",
                                                      "experiment", "index"])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_memory"))
    args = parser.parse_args()
    work = args.work.resolve()
    hub = work / "hub"
    if not hub.exists():
        make_tiny_hub_module(hub)
    package = subprocess.run([sys.executable, "-c",
                              "import runway_cnn; print(runway_cnn.__file__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"measuring the package at {package} (run from another checkout's folder to measure "
          "that one)", flush=True)
    results = []
    for size in args.sizes:
        folder = make_folder(work / f"data_{size}", size)
        for job in args.jobs:
            run = work / f"{job}_{size}_{int(time.time())}"
            settings = (f"dataset_dir={str(folder)!r}, train_dir={str(run)!r}, "
                        f"model_name={'hub:' + str(hub)!r}, image_size={args.image_size}, verbose=0")
            export = work / f"finetune_{size}_export"
            code = JOBS[job].format(settings=settings, export=str(export), data=str(folder),
                                    out=str(run))
            if job == "finetune":
                code += f"; import shutil; shutil.copytree({str(run)!r}, {str(export)!r}, " \
                        "dirs_exist_ok=True)"
            mib, seconds = peak_rss(code)
            results.append({"images": size, "job": job, "package": package,
                            "peak_rss_mib": round(mib),
                            "seconds": round(seconds, 1)})
            print(json.dumps(results[-1]), flush=True)
            (work / "results.json").write_text(json.dumps(results, indent=1))
    print("\n| job | " + " | ".join(f"{s:,} images" for s in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    for job in args.jobs:
        cells = [next((f"{r['peak_rss_mib']:,} MiB ({r['seconds']:.0f} s)" for r in results
                       if r["job"] == job and r["images"] == s), "–") for s in args.sizes]
        print(f"| {job} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
