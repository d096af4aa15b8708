"""Two ``MultiWorkerMirroredStrategy`` workers on this machine against one process, in one run:
stage-2 training images/s of the same fine-tune (the tiny test backbone, test-made photos).

    PYTHONPATH=. python bench/bench_multi_worker.py [--per_class 60] [--epochs 2]

Both runs use ``--batch_size 16`` per replica, so the two-worker run trains with a global batch of
32 (and half as many steps). Images/s = training images × epochs / the stage's wall time
(``stages.stage2.seconds``: its epochs, per-epoch validation and checkpoints). The two workers
are processes on loopback ports (``tests/test_distribute.run_workers``); on a 2-core machine they
share the cores, so no speed-up is expected: the figure measures the collectives' cost.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_image_folder  # noqa: E402
from test_distribute import CLASSES, run_workers  # noqa: E402
from tiny_models import make_tiny_hub_module  # noqa: E402


def images_per_second(train_dir: Path, epochs: int) -> tuple[float, float]:
    metrics = json.loads((train_dir / "metrics.json").read_text())
    seconds = metrics["stages"]["stage2"]["seconds"]
    return sum(metrics["label_counts"]["train"].values()) * epochs / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per_class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_multi_worker_"))
    dataset = make_image_folder(work / "looks", CLASSES, per_class=args.per_class,
                                size=(64, 128))
    hub = make_tiny_hub_module(work / "hub")
    settings = {"dataset_dir": str(dataset), "model_name": f"hub:{hub}", "image_size": 64,
                "batch_size": 16, "stage2_epochs": args.epochs, "patience": 0,
                "validation_fraction": 0.2, "test_fraction": 0.2, "verbose": 0}
    flags = [f"--{k}={v}" for k, v in settings.items()]
    one = subprocess.run([sys.executable, "-m", "runway_cnn.finetune", *flags,
                          f"--train_dir={work / 'one'}"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)
    if one.returncode:
        sys.exit(one.stderr[-2000:])
    done = run_workers({**settings, "train_dir": str(work / "two")}, work, timeout=1800)
    for worker in done:
        if worker.returncode:
            sys.exit(worker.stderr[-2000:])
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}; cores: {os.cpu_count()}")
    for name, train_dir in (("one process", work / "one"), ("two workers", work / "two")):
        rate, seconds = images_per_second(train_dir, args.epochs)
        print(f"{name:12s} stage 2: {rate:6.1f} images/s ({seconds:.1f} s for {args.epochs} "
              "epochs)")


if __name__ == "__main__":
    main()
