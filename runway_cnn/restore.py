"""Rebuild a finished run from its train dir: the model (backbone + head, trained weights), its
task and its data splits — what re-exporting, TFLite conversion and later evaluation need.

    run = restore_run("runs/brands")
    run.model            # keras.Model: [0, 1] images → logits, with model.weights.h5 loaded
    run.split("validation").paths

The backbone is rebuilt from ``config.json`` (``model_name`` / ``hub_handle`` / ``init_from_run``
and ``image_size``) without downloading pre-trained weights, since ``model.weights.h5`` replaces
them; a TF-Hub handle or parent run the config names must still exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from runway_cnn import data
from runway_cnn.backbones import BACKBONES, Backbone
from runway_cnn.config import FinetuneConfig
from runway_cnn.errors import CheckpointError, DataError, first_line
from runway_cnn.runfiles import read_json
from runway_cnn.tasks import Task, get_task
from runway_cnn.trainer import (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, build_backbone,
                                classifier, load_model_weights)

SPLITS_FILE, REPORT_FILE = "splits.json", "data_report.json"


@dataclass
class TrainedRun:
    """A finished run rebuilt from its train dir."""

    train_dir: Path
    config: dict
    model: keras.Model
    backbone: Backbone
    task: Task

    @property
    def recorded_export(self) -> Path | None:
        """The export version dir the run recorded in ``metrics.json`` (it may be gone)."""
        path = _read_json(self.train_dir / METRICS_FILE, required=False).get("export_path")
        return Path(path) if path else None

    @property
    def serving_name(self) -> str:
        """The model name the run exported under (its recorded export, else the config's
        ``serving_name``, else the dataset folder's name)."""
        if self.recorded_export is not None:
            return self.recorded_export.parent.name
        return self.config.get("serving_name") or data.dataset_name(self.config["dataset_dir"])

    @property
    def export_base(self) -> Path:
        """The base dir the run exported to (``<export_base>/<serving_name>/<version>``)."""
        if self.recorded_export is not None:
            return self.recorded_export.parent.parent
        return Path(self.config.get("export_dir") or self.train_dir / "export")

    def split(self, name: str) -> data.Split:
        """One split of the run's data (see :func:`run_split`)."""
        return run_split(self.train_dir, name)


def _read_json(path: Path, required: bool = True) -> dict:
    return read_json(path, required=required,
                     fix=f"{path.parent} is not a finished runway_cnn train dir (a damaged file: "
                         "run the same finetune command again to rewrite it)")


def class_names(train_dir: str | Path) -> list[str]:
    """The run's class names, in label order (from metrics.json, else data_report.json)."""
    train_dir = Path(train_dir)
    for name in (METRICS_FILE, REPORT_FILE):
        names = _read_json(train_dir / name, required=False).get("class_names")
        if names:
            return list(names)
    raise CheckpointError(f"{train_dir} records no class names (no {METRICS_FILE} or "
                          f"{REPORT_FILE})")


def rebuild_backbone(config: dict) -> Backbone:
    """The run's backbone architecture from its config, fetching as few pre-trained weights as
    its entry allows (``model.weights.h5`` overwrites every weight anyway)."""
    weights = "default"
    if not (config.get("hub_handle") or config.get("init_from_run")):
        weights = BACKBONES.get(config["model_name"]).architecture_weights
    return build_backbone(FinetuneConfig(**{**config, "weights": weights or "none"}))


def restore_run(train_dir: str | Path) -> TrainedRun:
    """Rebuilds the trained classifier of ``train_dir`` and loads ``model.weights.h5``."""
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise CheckpointError(f"train dir {train_dir} does not exist")
    config = _read_json(train_dir / CONFIG_FILE)
    weights = train_dir / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{weights} not found: the run in {train_dir} has not finished "
                              "(run the same finetune command again to resume it)")
    task = get_task(config.get("task", "single_label"), class_names(train_dir),
                    **{k: config[k] for k in ("label_smoothing", "dropout") if k in config})
    backbone = rebuild_backbone(config)
    model = classifier(backbone, task.build_head(backbone.feature_dim))
    try:
        load_model_weights(model, weights)
    except Exception as error:  # a weights file of another architecture or class count
        raise CheckpointError(f"cannot load {weights} into the model config.json describes: "
                              f"{first_line(error)}") from error
    return TrainedRun(train_dir, config, model, backbone, task)


def run_split(train_dir: str | Path, name: str) -> data.Split:
    """Split ``name`` as the run used it: ``splits.json`` sources under the dataset root of
    ``data_report.json``, with converted copies where the scan made them."""
    train_dir = Path(train_dir)
    splits = _read_json(train_dir / SPLITS_FILE)
    if name not in splits:
        raise CheckpointError(f"{train_dir / SPLITS_FILE} has no {name!r} split "
                              f"(it has {', '.join(splits)})")
    report = _read_json(train_dir / REPORT_FILE, required=False)
    config = _read_json(train_dir / CONFIG_FILE, required=False)
    root = Path(report.get("root") or config.get("dataset_dir") or ".")
    converted = {c["source"]: c["path"] for c in report.get("converted", [])}
    items = splits[name]
    paths = [converted.get(item["source"], str(root / item["source"])) for item in items]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise DataError(f"{len(missing)} image(s) of the {name} split of {train_dir} are gone, "
                        f"e.g. {missing[0]}")
    return data.Split(paths, np.array([item["label"] for item in items], np.int32),
                      [item["source"] for item in items])
