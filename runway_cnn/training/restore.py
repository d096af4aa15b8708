"""Rebuild a finished run from its train dir: the model (backbone + head, trained weights), its
task and its data splits — what re-exporting, TFLite conversion and later evaluation need.

    run = restore_run("runs/brands")
    run.model            # keras.Model: [0, 1] images → logits, with model.weights.h5 loaded
    run_split("runs/brands", "validation").paths

The backbone is rebuilt from ``config.json`` (its ``model_name`` spec, or an older version's
``hub_handle`` / ``init_from``, and ``image_size``) without downloading pre-trained weights, since
``model.weights.h5`` replaces them; a TF-Hub handle or parent run the config names must still
exist.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runway_cnn.backbones.factory import (
    BACKBONES,
    Backbone,
    ModelSpec,
    current_backbone_settings,
    get_backbone,
    parse_model_spec,
)
from runway_cnn.data.dataset import Split
from runway_cnn.data.tfrecords import RECORD_PREFIX, is_tfrecord_dir, read_tfrecord_dataset
from runway_cnn.errors import CheckpointError, DataError, first_line
from runway_cnn.json_io import read_json
from runway_cnn.tasks import Task, task_for_run, task_from_config
from runway_cnn.train_dir import TrainDir
from runway_cnn.training.callbacks import load_model_weights
from runway_cnn.training.config import check_recorded
from runway_cnn.training.device import float32_policy
from runway_cnn.training.result import RunResult
from runway_cnn.training.trainer import classifier


def recorded_export(metrics: dict) -> Path | None:
    """The export a run's metrics record, if it still exists."""
    path = metrics.get("export_path")
    return Path(path) if path and (Path(path) / "saved_model.pb").exists() else None


def _read_json(path: Path, required: bool = True) -> dict:
    return read_json(path, required=required,
                     fix=f"{path.parent} is not a finished runway_cnn train dir (a damaged file: "
                         "run the same finetune command again to rewrite it)")


def run_task(train_dir: Path, config: dict) -> Task:
    """The run's task, from the config ``metrics.json`` records (runs from before tasks were
    saved whole: their task name, class names and ``config.json`` options)."""
    recorded = _read_json(TrainDir(train_dir).metrics, required=False).get("task")
    if isinstance(recorded, dict):
        return task_from_config(recorded)
    return task_for_run(config.get("task", "single_label"), class_names(train_dir), config)


def class_names(train_dir: str | Path) -> list[str]:
    """The run's class names, in label order (from metrics.json, else data_report.json)."""
    train_dir = Path(train_dir)
    for path in (TrainDir(train_dir).metrics, TrainDir(train_dir).data_report):
        recorded = _read_json(path, required=False)
        names = recorded.get("labels") or recorded.get("class_names")
        if names:
            return list(names)
    raise CheckpointError(f"{train_dir} records no class names (no metrics.json or "
                          "data_report.json)")


def rebuild_backbone(config: dict) -> Backbone:
    """The run's backbone architecture from its config (of any version), fetching as few
    pre-trained weights as its entry allows (``model.weights.h5`` overwrites every weight
    anyway)."""
    spec = parse_model_spec(current_backbone_settings(config)["model_name"])
    weights = "default"
    if spec.source in ("registry", "keras"):
        spec = ModelSpec(spec.source, spec.target)  # not its weights file
        weights = BACKBONES.get(spec.target).architecture_weights
    return get_backbone(spec, weights=weights, image_size=config.get("image_size"))


def restore_run(train_dir: str | Path) -> RunResult:
    """Rebuilds the trained classifier of ``train_dir`` (computing in float32, however it was
    trained) and loads ``model.weights.h5``."""
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise CheckpointError(f"train dir {train_dir} does not exist")
    config = _read_json(TrainDir(train_dir).config)
    weights = TrainDir(train_dir).weights
    if not weights.exists():
        raise CheckpointError(f"{weights} not found: the run in {train_dir} has not finished "
                              "(run the same finetune command again to resume it)")
    check_recorded(config, TrainDir(train_dir).config)  # edited by hand: one line, no traceback
    task = run_task(train_dir, config)
    with float32_policy():  # not a mixed_float16 policy an earlier run left in the process
        backbone = rebuild_backbone(config)
        model = classifier(backbone, task.build_head(backbone.feature_dim),
                           config.get("pooling", "avg"))
    try:
        load_model_weights(model, weights)
    except Exception as error:  # a weights file of another architecture or class count
        raise CheckpointError(f"cannot load {weights} into the model config.json describes: "
                              f"{first_line(error)}") from error
    metrics = _read_json(TrainDir(train_dir).metrics, required=False)
    return RunResult(train_dir, config, metrics, model, task, backbone,
                     recorded_export(metrics))


def run_split(train_dir: str | Path, name: str) -> Split:
    """Split ``name`` as the run used it: ``splits.json`` sources under the dataset root of
    ``data_report.json``, with converted copies where the scan made them."""
    train_dir = Path(train_dir)
    splits = _read_json(TrainDir(train_dir).splits)
    if name not in splits:
        raise CheckpointError(f"{TrainDir(train_dir).splits} has no {name!r} split "
                              f"(it has {', '.join(splits)})")
    report = _read_json(TrainDir(train_dir).data_report, required=False)
    config = _read_json(TrainDir(train_dir).config, required=False)
    root = Path(report.get("root") or config.get("dataset_dir") or ".")
    items = splits[name]
    if is_tfrecord_dir(root):  # the records of a TFRecord directory
        records, _ = read_tfrecord_dataset(root)
        refs = {src: ref for s in records.splits.values() for src, ref in zip(s.sources, s.paths)}
        paths = [refs.get(item["source"], str(root / item["source"])) for item in items]
    else:
        converted = {c["source"]: c["path"] for c in report.get("converted", [])}
        paths = [converted.get(item["source"], str(root / item["source"])) for item in items]
    missing = [p for p in paths if not (p.startswith(RECORD_PREFIX) or Path(p).exists())]
    if missing:
        raise DataError(f"{len(missing)} image(s) of the {name} split of {train_dir} are gone, "
                        f"e.g. {missing[0]}")
    return Split(paths, np.array([item.get("target", item.get("label")) for item in items]),
                 [item["source"] for item in items])
