"""One tiny trained run shared by test_export.py and test_serving.py (trained once a session), and
the bad inputs the export's error behaviour is tested with."""
from __future__ import annotations

from pathlib import Path

from runway_cnn import FinetuneConfig, RunResult, fine_tune
from conftest import make_image_folder
from tiny_models import make_tiny_hub_module

CLASSES = ("checks", "circles", "hstripes", "vstripes")
_RUNS: dict[str, RunResult] = {}


def shared_run(tmp_path_factory) -> RunResult:
    """A finished run (4 classes × 10 JPEGs, tiny TF-Hub backbone, 32 px, stage 1 only) with its
    export at ``<train_dir>/export/looks/1``."""
    if "run" not in _RUNS:
        root = tmp_path_factory.mktemp("serving_run")
        dataset = make_image_folder(root / "looks", CLASSES, per_class=10, size=(40, 72))
        hub = make_tiny_hub_module(root / "hub")
        _RUNS["run"] = fine_tune(FinetuneConfig(
            dataset_dir=str(dataset), train_dir=str(root / "run"), model_name=f"hub:{hub}",
            image_size=32, batch_size=8, stage1_epochs=12, stage2_epochs=0, learning_rate=1e-2,
            validation_fraction=0.2, test_fraction=0.2, top_k=3, verbose=0))
    return _RUNS["run"]


def sample_images(run: RunResult, n: int = 4) -> list[Path]:
    """``n`` of the run's dataset images, spread over the classes."""
    files = sorted((run.train_dir.parent / "looks").glob("*/*.jpg"))
    return [files[i * len(files) // n] for i in range(n)]


def bad_inputs(good: bytes) -> dict[str, bytes]:
    """Inputs the signatures must refuse: text, nothing, and a JPEG cut in half."""
    return {"text": b"a fashion week review, not a photo", "empty": b"",
            "truncated": good[:len(good) // 2]}
