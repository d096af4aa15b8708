"""Export time, load time and size of one trained model, this checkout's export against another
revision's, alternated in one process (the same model, the same machine state).

    python bench/bench_export.py --against fcf02ba                       # the tiny hub backbone
    python bench/bench_export.py --against fcf02ba --model_name mobilenet_v2 --reps 3

The other revision's ``runway_cnn/export/saved_model.py`` is read with ``git show`` and run on the
same model; both exports must give the same probabilities.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_image_folder  # noqa: E402
from tiny_models import make_tiny_hub_module  # noqa: E402

from runway_cnn import FinetuneConfig, fine_tune  # noqa: E402
from runway_cnn.export import saved_model  # noqa: E402
from runway_cnn.inference.predictor import Predictor  # noqa: E402


def module_at(revision: str, work: Path):
    """``runway_cnn/export/saved_model.py`` as it was at ``revision``, imported."""
    source = subprocess.run(["git", "-C", str(ROOT), "show",
                             f"{revision}:runway_cnn/export/saved_model.py"],
                            capture_output=True, text=True, check=True).stdout
    path = work / f"saved_model_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"saved_model_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the revision to compare with")
    parser.add_argument("--model_name", default="tiny",
                        help="'tiny' (the tests' hub module) or a Keras application, untrained")
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    backbone = ({"model_name": f"hub:{make_tiny_hub_module(work / 'hub')}"}
                if args.model_name == "tiny" else
                {"model_name": args.model_name, "weights": "none", "pooling": "max"})
    result = fine_tune(FinetuneConfig(
        dataset_dir=str(make_image_folder(work / "looks", per_class=6, size=(40, 64))),
        train_dir=str(work / "run"), image_size=32, validation_fraction=0.25,
        test_fraction=0.25, stage2_epochs=0, verbose=0, **backbone))
    images = np.random.default_rng(1).uniform(size=(3, 32, 32, 3)).astype("float32")
    sides = {args.against: module_at(args.against, work), "this checkout": saved_model}
    seconds = {side: [] for side in sides}
    answers = {}
    for _ in range(args.reps):
        for side, module in sides.items():
            start = time.monotonic()
            path = module.export_model(result.model, result.backbone, result.task,
                                       work / "exports", side.replace(" ", "_"))
            export = time.monotonic() - start
            start = time.monotonic()
            predictor = Predictor(path)
            load = time.monotonic() - start
            answers[side] = predictor.probabilities(images)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            seconds[side].append((export, load))
            print(f"{side:14s} export {export:6.2f} s  load {load:5.2f} s  "
                  f"size {size / 1e6:6.2f} MB", flush=True)
    np.testing.assert_allclose(*answers.values(), atol=1e-6)
    for side, pairs in seconds.items():
        export, load = np.array(pairs).T
        print(f"{args.model_name} {side}: export median {np.median(export):.2f} s "
              f"({export.min():.2f}-{export.max():.2f}), load median {np.median(load):.2f} s "
              f"({load.min():.2f}-{load.max():.2f}), {args.reps} each")


if __name__ == "__main__":
    main()
