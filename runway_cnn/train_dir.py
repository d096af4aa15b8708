"""The files of a train dir, named in one place: :class:`TrainDir` (a run's, an experiment's or
one run of an experiment's folder) and :class:`StageDir` (one stage's). Nothing here imports
TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


STAGES = ("stage1", "stage2")


@dataclass(frozen=True)
class StageDir:
    """One stage's files: markers, weights, history, backup, logs."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    done = property(lambda self: self.path / "done.json")  # the stage finished: its summary
    final_weights = property(lambda self: self.path / "final.weights.h5")
    best_weights = property(lambda self: self.path / "best.weights.h5")
    history = property(lambda self: self.path / "history.csv")  # Keras' CSVLogger
    backup = property(lambda self: self.path / "backup")  # Keras' BackupAndRestore
    logs = property(lambda self: self.path / "logs")  # TensorBoard
    seconds = property(lambda self: self.path / "seconds.json")  # time over processes
    plan = property(lambda self: self.path / "plan.json")  # stage 2's plan, kept for a resume
    selected = property(lambda self: self.path / "selected.json")  # refit: the figures before


WORKER_TEMP = "workertemp_"  # + a worker's index: its temporary train dir in the chief's


@dataclass(frozen=True)
class TrainDir:
    """A run's folder (or an experiment's, or one run of an experiment): every file by name."""

    path: Path

    config = property(lambda self: self.path / "config.json")
    splits = property(lambda self: self.path / "splits.json")
    data_report = property(lambda self: self.path / "data_report.json")
    converted = property(lambda self: self.path / "converted")  # RGB copies of odd images
    metrics = property(lambda self: self.path / "metrics.json")
    weights = property(lambda self: self.path / "model.weights.h5")  # the final model
    # content keys (data.pipeline.content_keys) of the photos the final model learned from
    learned = property(lambda self: self.path / "learned_from.txt")
    curves = property(lambda self: self.path / "training_curves.png")
    export_base = property(lambda self: self.path / "export")  # the default --export_dir
    # an experiment's (--num_splits / --kfold) files, and each of its runs' marker
    features = property(lambda self: self.path / "features.npz")  # what features.npy holds
    feature_array = property(lambda self: self.path / "features.npy")  # memory-mapped
    summary = property(lambda self: self.path / "summary.json")
    summary_csv = property(lambda self: self.path / "summary.csv")
    split_plot = property(lambda self: self.path / "split_accuracy.png")
    done = property(lambda self: self.path / "done.json")

    def stage(self, name: str) -> StageDir:
        return StageDir(self.path / name)

    def experiment_run(self, name: str) -> TrainDir:
        return TrainDir(self.path / name)

    def state_files(self) -> list[str]:
        """The names in the folder that a new run would read back as an earlier run's state:
        a finished run (``metrics.json``), an experiment's (``summary.json``, ``done.json``),
        stages and experiment runs to resume."""
        names = {self.metrics.name, self.summary.name, self.done.name, *STAGES}
        return sorted(p.name for p in self.path.iterdir() if p.name in names
                      or p.name.startswith(("split_", "fold_"))) if self.path.is_dir() else []

    def has_training(self) -> bool:
        """Whether it holds training that a new run would resume (a stage, or an experiment's
        run, started there)."""
        return self.path.is_dir() and any(
            p.is_dir() and (p.name in STAGES or p.name.startswith(("split_", "fold_")))
            for p in self.path.iterdir())
