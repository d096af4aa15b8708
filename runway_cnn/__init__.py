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
from runway_cnn.export import export_model, load_export, resolve_export  # noqa: E402
from runway_cnn.tasks import TASKS, Task, get_task  # noqa: E402
from runway_cnn.trainer import RunResult, fine_tune  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "BACKBONES", "DATASETS", "TASKS", "Backbone", "BackboneError", "CheckpointError", "DataError",
    "FinetuneConfig", "ImageFolderDataset", "RunResult", "RunwayError", "Task", "export_model",
    "fine_tune", "get_backbone", "get_task", "load_export", "resolve_export", "scan_image_folder",
]
