"""A stage's Keras callbacks (backup and resume, wall time, history, best checkpoint, early
stopping) and reading back what they wrote: the history, the best weights, the resumed epoch."""
from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from runway_cnn.errors import RunwayError, first_line
from runway_cnn.json_io import read_json, write_json
from runway_cnn.train_dir import StageDir


def read_epochs(stage_dir: StageDir) -> list[dict]:
    """The rows of the stage's ``history.csv``, one per epoch (none yet: [])."""
    if not stage_dir.history.exists():
        return []
    with stage_dir.history.open() as f:
        return list(csv.DictReader(f))


def _logged(stage_dir: StageDir, monitor: str) -> list[float]:
    """The figure ``monitor`` of every epoch in the stage's ``history.csv`` (none yet: [])."""
    return [float(row[monitor]) for row in read_epochs(stage_dir) if row.get(monitor)]


def _best_so_far(stage_dir: StageDir, monitor: str, mode: str, baseline: float | None
                 ) -> float | None:
    """The value a stage's best checkpoint must beat: its baseline, or, for a resumed stage, the
    best epoch logged before the interruption (Keras' ModelCheckpoint forgets it on restart)."""
    values = [] if baseline is None else [baseline]
    if stage_dir.best_weights.exists():
        values += _logged(stage_dir, monitor)
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def random_states(model: keras.Model) -> list:
    """The state variables of ``model``'s random generators (dropout's ``SeedGenerator``):
    Keras' weights files leave them out."""
    return [v for v in model.variables if v.path.rpartition("/")[2] == "seed_generator_state"]


class ResumingBackup(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore`` that says when a stage resumes, and sets a damaged backup
    aside (with a message; the stage then restarts from its start, the last good state) instead
    of failing every later attempt until ``backup/`` is deleted by hand. It also keeps the
    random generators' states (``random_states.npz``), so that a resumed stage draws the
    dropout masks an uninterrupted one would: it ends with the same weights."""

    def __init__(self, stage_dir: StageDir):
        super().__init__(str(stage_dir.backup))
        self.stage = stage_dir.name
        self.random_states = stage_dir.backup / "random_states.npz"

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        np.savez(self.random_states, *[v.numpy() for v in random_states(self.model)])

    def on_train_begin(self, logs=None):
        backup = Path(self.backup_dir)
        if not backup.exists():
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = list(model.variables) + list(getattr(model.optimizer, "variables", []))
        start = [v.numpy() for v in variables]
        try:
            super().on_train_begin(logs)
            epoch = int(model._initial_epoch or 0)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign backup file
            for variable, value in zip(variables, start):
                variable.assign(value)
            model._initial_epoch = None
            aside = backup.with_name(f"backup.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            backup.rename(aside)
            print(f"{backup} is damaged ({first_line(error)}): set aside as {aside.name}; "
                  f"{self.stage} restarts from its start", flush=True)
            return
        if self.random_states.exists():
            with np.load(self.random_states) as saved:
                for variable, name in zip(random_states(model), saved.files):
                    variable.assign(saved[name])
        print(f"resuming {self.stage} at epoch {epoch + 1}", flush=True)


class StageClock(keras.callbacks.Callback):
    """A stage's wall time over every process that worked on it: saved at each epoch end, so
    the ``done.json`` of a resumed stage counts the interrupted processes too."""

    def __init__(self, stage_dir: StageDir):
        super().__init__()
        self.path = stage_dir.seconds
        self.before = float(read_json(self.path, fix=f"delete it (only {stage_dir.name}'s "
                                                     "reported time is lost)", required=False
                                      ).get("seconds", 0.0))
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        write_json(self.path, {"seconds": self.seconds})


def stage_callbacks(stage_dir: StageDir, monitor: str, mode: str, baseline: float | None,
                    patience: int | None, clock: StageClock) -> list[keras.callbacks.Callback]:
    """A stage's callbacks; its best checkpoint must beat ``baseline`` (or, resumed, the best
    epoch logged so far)."""
    stage_dir.path.mkdir(parents=True, exist_ok=True)
    baseline = _best_so_far(stage_dir, monitor, mode, baseline)
    callbacks = [
        ResumingBackup(stage_dir), clock, keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(stage_dir.history), append=True),
        keras.callbacks.TensorBoard(str(stage_dir.logs), write_graph=False),
        keras.callbacks.ModelCheckpoint(str(stage_dir.best_weights), monitor=monitor,
                                        mode=mode, save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=baseline),
    ]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    return callbacks


def validation_bought(stage_dir: StageDir, monitor: str, mode: str, baseline: float,
                      improved: bool) -> tuple[dict, str]:
    """What stage 2 bought on validation: its best epoch's monitored figure against stage 1's
    (``validation_gain`` > 0 is better, whichever way the figure goes; 0 when stage 2 is not
    kept), as ``metrics.json`` entries and the line the run prints."""
    values = _logged(stage_dir, monitor)
    sign = 1.0 if mode == "max" else -1.0
    best = (max if mode == "max" else min)(values) if values else baseline
    gain = sign * (best - baseline)
    kept = "kept" if improved else "not kept: stage 1's weights stay"
    return ({f"stage1_{monitor}": baseline, f"best_{monitor}": best,
             "validation_gain": gain if improved else 0.0},
            f"stage 2: best {monitor} {best:.4f} against stage 1's {baseline:.4f} ({gain:+.4f}) "
            f"in {len(values)} epoch(s), {kept}")


def best_epoch(stage_dir: StageDir, monitor: str, mode: str) -> int | None:
    """The number of epochs after which the stage's monitored figure was best (what a refit
    trains for), or None when the stage logged no epoch."""
    values = _logged(stage_dir, monitor)
    if not values:
        return None
    return int((np.argmax(values) if mode == "max" else np.argmin(values)) + 1)


def load_model_weights(model: keras.Model, path: Path) -> None:
    """``model.load_weights``, quiet about optimizer state: weight files are saved before or after
    a stage compiles its optimizer, and only the model's weights matter when loading them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(str(path))


def load_best(model: keras.Model, stage_dir: StageDir) -> bool:
    """Loads the stage's best weights if it saved any (it beat its baseline); says whether."""
    best = stage_dir.best_weights
    if best.exists():
        load_model_weights(model, best)
    return best.exists()


def resumed_epoch(stage_dir: StageDir) -> int:
    """The epoch an interrupted stage resumes at: the one Keras' BackupAndRestore recorded."""
    metadata = stage_dir.backup / "training_metadata.json"
    if not metadata.exists():
        return 0
    try:
        return int(read_json(metadata, fix="").get("epoch", 0))
    except (RunwayError, TypeError, ValueError):
        return 0  # a damaged backup: ResumingBackup sets it aside and the stage restarts
