"""runway_cnn: fine-tune ImageNet CNNs on folders of fashion photos and export them for TF Serving.

The path of data reads like the package's folders: ``data`` → ``backbones`` → ``tasks`` →
``training`` (the two stages) → ``export`` → ``inference``, with ``cli`` a thin layer on top.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from runway_cnn.errors import BackboneError, CheckpointError, DataError, RunwayError  # noqa: E402

__version__ = "0.1.0"
# imported on first use: ``import runway_cnn`` (and every ``python -m runway_cnn.COMMAND``, which
# imports it first) loads no TensorFlow until a name is asked for, so a Ctrl-C in the seconds
# TensorFlow takes to import reaches the commands' one-line handling (:func:`runway_cnn.cli.run`)
_LAZY = {"fine_tune": "runway_cnn.api",
         "BACKBONES": "runway_cnn.backbones.factory", "Backbone": "runway_cnn.backbones.factory",
         "get_backbone": "runway_cnn.backbones.factory",
         "ImageDataset": "runway_cnn.data.dataset",
         "DATASETS": "runway_cnn.data.folders", "scan_image_folder": "runway_cnn.data.folders",
         "TASKS": "runway_cnn.tasks", "Task": "runway_cnn.tasks", "get_task": "runway_cnn.tasks",
         "FinetuneConfig": "runway_cnn.training.config",
         "RunResult": "runway_cnn.training.result",
         "export_model": "runway_cnn.export.saved_model",
         "load_export": "runway_cnn.export.saved_model",
         "resolve_export": "runway_cnn.export_dir",
         "Predictor": "runway_cnn.inference.predictor", "Client": "runway_cnn.inference.client",
         "build_attribute_index": "runway_cnn.inference.attribute_index",
         "query_attribute_index": "runway_cnn.inference.attribute_index",
         "build_image_index": "runway_cnn.inference.retrieval",
         "query_image_index": "runway_cnn.inference.retrieval",
         "evaluate_image_index": "runway_cnn.inference.retrieval"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runway_cnn' has no attribute {name!r}")


__all__ = [
    "BACKBONES", "DATASETS", "TASKS", "Backbone", "BackboneError", "CheckpointError", "Client",
    "DataError", "FinetuneConfig", "ImageDataset", "Predictor", "RunResult", "RunwayError",
    "Task", "build_attribute_index", "build_image_index", "evaluate_image_index", "export_model",
    "fine_tune", "get_backbone", "get_task", "load_export", "query_attribute_index",
    "query_image_index", "resolve_export", "scan_image_folder",
]
