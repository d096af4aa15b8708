"""The whole job from Python: ``fine_tune`` trains (``training/``) and exports (``export/``).

    result = runway_cnn.fine_tune(dataset_dir="photos/brands", train_dir="runs/brands")
    result.metrics["test"]["top1"], result.export_path
"""
from __future__ import annotations

import time
from pathlib import Path

from runway_cnn.errors import CheckpointError
from runway_cnn.export.saved_model import export_model
from runway_cnn.export_dir import read_assets
from runway_cnn.json_io import write_json
from runway_cnn.train_dir import TrainDir
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.training.experiments import refit_experiment, run_experiment
from runway_cnn.training.result import RunResult, export_location, export_refit
from runway_cnn.training.trainer import FineTuner


def fine_tune(config: FinetuneConfig | None = None, **settings) -> RunResult:
    """Runs a whole fine-tune and exports it: ``fine_tune(dataset_dir="photos/",
    train_dir="runs/x")`` or ``fine_tune(FinetuneConfig(...))``. A killed run called again with
    the same settings resumes; a finished one says so and is not exported again (unless its
    export is gone or ``top_k`` changed; ``python -m runway_cnn.export`` re-exports on request).

    With ``num_splits`` or ``kfold`` set it runs that experiment instead; the result's
    ``metrics`` are then its summary (:func:`runway_cnn.training.experiments.run_experiment`),
    and with ``export_dir`` it exports one model refit on every labelled photo
    (:func:`runway_cnn.training.experiments.refit_experiment`).
    """
    config = config or FinetuneConfig(**settings)
    if config.num_splits or config.kfold:
        summary = run_experiment(config)
        if not config.export_dir:  # (--refit none with --export_dir: refused before the runs)
            return RunResult(Path(config.train_dir), config.to_dict(), summary)
        result = refit_experiment(config, summary)
        model_dir = export_location(config.to_dict(), result.train_dir)
        return _export(result, model_dir, config.top_k, TrainDir(result.train_dir).summary)
    tuner = FineTuner(config)
    # where the flags say, not where a finished run last exported (a non-chief's: temporary)
    model_dir = export_location(config.to_dict(), tuner.train_dir, export_dir=(
        config.export_dir and tuner.distribution.work_dir(config.export_dir)))
    finished = tuner.finished()
    if finished is not None and _exported(finished.export_path, model_dir, config.top_k):
        print(f"{tuner.train_dir} holds this run, finished; its export is "
              f"{finished.export_path} (python -m runway_cnn.export --train_dir "
              f"{tuner.train_dir} exports it again)", flush=True)
        return finished
    result = _export(finished or tuner.run(), model_dir, config.top_k,
                     TrainDir(tuner.train_dir).metrics)
    tuner.distribution.remove_temporary()
    return result


def _export(result: RunResult, model_dir: Path, top_k: int, record: Path) -> RunResult:
    """Exports ``result``'s model into ``model_dir`` and records the export in ``record`` (the
    run's ``metrics.json``, an experiment's ``summary.json``)."""
    start = time.monotonic()
    result.export_path = export_model(result.model, result.backbone, result.task,
                                      model_dir.parent, model_dir.name, top_k=top_k,
                                      refit=export_refit(result))
    result.metrics["export_path"] = str(result.export_path)
    result.metrics.setdefault("seconds", {})["export"] = time.monotonic() - start
    write_json(record, result.metrics, indent=2)
    return result


def _exported(export_path: Path | None, model_dir: Path, top_k: int) -> bool:
    """Whether ``export_path`` is a readable export in ``model_dir`` with this ``top_k``."""
    if export_path is None or export_path.parent != model_dir \
            or not (export_path / "saved_model.pb").exists():
        return False
    try:
        return read_assets(export_path)[1].get("top_k") == top_k
    except CheckpointError:  # a damaged export: make a new one
        return False
