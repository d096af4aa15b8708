"""A run's result, and where a run exports: what :func:`runway_cnn.fine_tune` returns,
:func:`runway_cnn.training.restore.restore_run` rebuilds and a re-export reads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import keras

from runway_cnn.backbones.factory import Backbone
from runway_cnn.data.folders import dataset_name
from runway_cnn.tasks import Task
from runway_cnn.train_dir import TrainDir
from runway_cnn.training.refit import read_learned_keys


def export_location(config: Mapping, train_dir: str | Path, recorded: Path | None = None,
                    export_dir: str | Path | None = None, serving_name: str | None = None
                    ) -> Path:
    """The model dir ``<export base>/<serving name>`` a run exports into. Each part is the
    first that is given of: the argument (where this export is told to go), the export the run
    recorded (``recorded``: where it last exported), the run's ``--export_dir`` /
    ``--serving_name``, and the defaults ``<train_dir>/export`` / the dataset folder's name.
    Training passes no recorded export (it exports where its flags say); a re-export does."""
    base = (export_dir or (recorded.parent.parent if recorded else None)
            or config.get("export_dir") or TrainDir(Path(train_dir)).export_base)
    name = (serving_name or (recorded.parent.name if recorded else None)
            or config.get("serving_name") or dataset_name(config["dataset_dir"]))
    return Path(base) / name


@dataclass
class RunResult:
    """A finished run: what :func:`runway_cnn.fine_tune` returns and
    :func:`runway_cnn.training.restore.restore_run` rebuilds. For an experiment (``--num_splits``
    / ``--kfold``) ``metrics`` is its summary and there is no model (each run has its folder)."""

    train_dir: Path
    config: dict
    metrics: dict
    model: keras.Model | None = None
    task: Task | None = None
    backbone: Backbone | None = None
    export_path: Path | None = None

    @property
    def is_experiment(self) -> bool:
        return bool(self.config.get("num_splits") or self.config.get("kfold"))

    @property
    def recorded_export(self) -> Path | None:
        """The export version dir ``metrics.json`` records (it may be gone)."""
        recorded = self.metrics.get("export_path")
        return Path(recorded) if recorded else None


    @property
    def serving_name(self) -> str:
        """The model name the run exports under (:func:`export_location`)."""
        return export_location(self.config, self.train_dir, self.recorded_export).name

    @property
    def export_base(self) -> Path:
        """The base dir the run exports to (:func:`export_location`)."""
        return export_location(self.config, self.train_dir, self.recorded_export).parent


def export_refit(run: RunResult) -> dict | None:
    """What an export's metadata records of the run's refit: the splits and photos the model
    learned from, where to find them (the run's ``splits.json``) and their ``content_keys``
    (the export keeps them in a file of its own), so that ``evaluate`` can tell photos the
    export learned from wherever they lie; None for a run from before the refit."""
    refit = run.metrics.get("refit")
    if not refit:
        return None
    kept = ("splits", "images", "images_by_split", "refit", "what", "why", "notes", "rule",
            "dataset_root")
    keys = read_learned_keys(run.train_dir)
    return {key: refit[key] for key in kept if key in refit} | {
        "train_dir": str(run.train_dir)} | ({} if keys is None else {"content_keys": keys})
