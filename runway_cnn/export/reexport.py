"""Re-export a finished run (rebuilt from its train dir) as the next SavedModel version, optionally
with TFLite files measured against the new SavedModel on the run's validation split."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from runway_cnn.data.pipeline import eval_crops
from runway_cnn.errors import RunwayError
from runway_cnn.export.saved_model import export_model
from runway_cnn.export.tflite import export_tflite, tflite_probabilities
from runway_cnn.export_dir import is_model_name, version_dirs
from runway_cnn.output_checks import check_output_dir, check_outside_inputs
from runway_cnn.training.config import EXPORT_FOLDER, run_inputs
from runway_cnn.training.restore import restore_run, run_split
from runway_cnn.training.result import export_location, export_refit


@dataclass
class TFLiteReport:
    variant: str
    path: Path
    size_bytes: int
    agreement: float  # share of validation images the task decides as the SavedModel does
    num_images: int
    max_abs_diff: float  # largest probability difference to the SavedModel


@dataclass
class ReexportResult:
    export_path: Path
    saved_model_bytes: int
    tflite: list[TFLiteReport] = field(default_factory=list)
    pruned: list[Path] = field(default_factory=list)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def reexport(train_dir: str | Path, export_dir: str | Path | None = None,
             serving_name: str | None = None, keep_versions: int | None = None,
             tflite: bool = False, top_k: int | None = None,
             batch_size: int = 32) -> ReexportResult:
    """Rebuilds a finished run and exports it again as the next version (by default under the
    base and name it first exported to); with ``tflite``, also converts it and measures the
    TFLite files against the new SavedModel on the run's validation split."""
    if keep_versions is not None and keep_versions < 1:
        raise RunwayError(f"--keep_versions {keep_versions}: keep at least 1 version")
    if top_k is not None and top_k < 1:
        raise RunwayError(f"--top_k {top_k}: must be at least 1")
    if serving_name is not None and not is_model_name(serving_name):
        raise RunwayError(f"--serving_name {serving_name!r}: must be a plain folder name (no "
                          "'/', '..' or leading '.'), a folder under --export_dir")
    check_output_dir(export_dir, "--export_dir")
    run = restore_run(train_dir)
    model_dir = export_location(run.config, run.train_dir, run.recorded_export, export_dir,
                                serving_name)
    inputs = run_inputs(run.config)  # the run's data, known once its config is read
    check_outside_inputs(export_dir, "--export_dir", inputs, may_hold=True)
    check_output_dir(model_dir, EXPORT_FOLDER, inputs)
    before = set(version_dirs(model_dir))
    version_dir = export_model(run.model, run.backbone, run.task, model_dir.parent,
                               model_dir.name,
                               top_k=top_k or run.config.get("top_k") or 5,
                               keep_versions=keep_versions, refit=export_refit(run))
    result = ReexportResult(version_dir, _dir_size(version_dir),
                            pruned=sorted(before - set(version_dirs(model_dir))))
    if tflite:
        paths = export_tflite(run.model, run.task, run.backbone.preprocessing.image_size,
                              version_dir)
        split = run_split(run.train_dir, "validation")
        images = eval_crops(split.paths, run.backbone.preprocessing, batch_size)
        served = tf.saved_model.load(str(version_dir)).signatures["predict_images"]
        reference = np.concatenate([served(images=tf.constant(images[i:i + batch_size]))
                                    ["probabilities"].numpy()
                                    for i in range(0, len(images), batch_size)])
        for variant, path in paths.items():
            probabilities = tflite_probabilities(path, images)
            result.tflite.append(TFLiteReport(
                variant, path, path.stat().st_size, run.task.agreement(reference, probabilities),
                len(images),
                float(np.abs(probabilities - reference).max())))
    return result
