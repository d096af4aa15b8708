"""runway_cnn: fine-tune ImageNet CNNs on folders of fashion photos and export them for TF Serving.

The path of data reads like the package: ``data`` → ``preprocessing`` / ``pipeline`` →
``backbones`` → ``tasks`` / ``heads`` → ``trainer`` (the two stages) → ``export``.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from runway_cnn.backbones import BACKBONES, Backbone, get_backbone  # noqa: E402
from runway_cnn.config import FinetuneConfig  # noqa: E402
from runway_cnn.data import DATASETS, ImageFolderDataset, scan_image_folder  # noqa: E402
from runway_cnn.errors import (BackboneError, CheckpointError, DataError,  # noqa: E402
                               RunwayError)
from runway_cnn.tasks import TASKS, Task, get_task  # noqa: E402
from runway_cnn.trainer import RunResult, fine_tune  # noqa: E402

__version__ = "0.1.0"
# imported on first use, so that ``python -m runway_cnn.export`` / ``-m runway_cnn.serving`` run
# their module once (no runpy "found in sys.modules" warning) and the client loads lazily
_LAZY = {"export_model": "runway_cnn.export", "load_export": "runway_cnn.export",
         "resolve_export": "runway_cnn.export", "Predictor": "runway_cnn.serving",
         "Client": "runway_cnn.serving"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runway_cnn' has no attribute {name!r}")


__all__ = [
    "BACKBONES", "DATASETS", "TASKS", "Backbone", "BackboneError", "CheckpointError", "Client",
    "DataError", "FinetuneConfig", "ImageFolderDataset", "Predictor", "RunResult", "RunwayError",
    "Task", "export_model", "fine_tune", "get_backbone", "get_task", "load_export",
    "resolve_export", "scan_image_folder",
]
