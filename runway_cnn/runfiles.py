"""The files a run writes, named in one place: the layout of a train dir (:class:`TrainDir`,
:class:`StageDir`) and of an export (version dirs and their assets), how a train dir or an export
base is resolved to a version dir, and safe JSON I/O. JSON files are written atomically, so a
killed process never leaves half a file, and read with a one-line error that names the damaged
file and says what to do. Output paths given on the command line are checked before any work
starts. Nothing here imports TensorFlow."""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runway_cnn.errors import CheckpointError, RunwayError, first_line


def write_json(path: str | os.PathLike, value, indent: int = 1) -> None:
    """Writes ``value`` to ``path`` through a temporary file and one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=indent) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, fix: str, required: bool = True) -> dict:
    """The JSON object in ``path``; ``{}`` for a missing file unless ``required``. A missing
    (required), unreadable or damaged file is a :class:`CheckpointError` ending in ``fix``."""
    path = Path(path)
    if not path.exists():
        if required:
            raise CheckpointError(f"{path} not found; {fix}")
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is damaged ({first_line(error)}); {fix}") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is damaged (a JSON {type(value).__name__}, not an "
                              f"object); {fix}")
    return value


def check_output_dir(path: str | os.PathLike | None, flag: str) -> None:
    """A folder to write into: it may exist as a folder or not yet, but neither it nor a parent
    may be a file."""
    if path is not None:
        _check_parents(Path(path), flag)
        if Path(path).exists() and not Path(path).is_dir():
            raise RunwayError(f"{flag} {path} is a file; give a folder")


def check_output_file(path: str | os.PathLike | None, flag: str) -> None:
    """A file to write: it may exist as a file or not yet; it may not be a folder, nor sit
    under a file."""
    if path is not None:
        _check_parents(Path(path), flag)
        if Path(path).is_dir():
            raise RunwayError(f"{flag} {path} is a folder; give a file name")


def check_own_output(path: str | os.PathLike, descriptor: str,
                     format: str | Callable[[Path], bool], names: tuple[str, ...],
                     overwrite: bool = False, flag: str = "--output",
                     concurrent: tuple[str, ...] = ()) -> None:
    """An output folder (given as ``flag``) a command writes its files ``names`` (shell
    patterns allowed: ``("*",)`` any) into: new, empty, or its own earlier output (its file
    ``descriptor`` a JSON object whose ``format`` is ``format``, or passing the test
    ``format``; beside it nothing but ``names`` and its killed writes' hidden temporary files).
    Any other folder holds files the command did not write, and is refused (one line naming
    ``flag``, the folder and some of the files) unless ``overwrite``. Names matching
    ``concurrent`` (what the command's other processes may be writing there now) never count."""
    path = Path(path)
    if overwrite or not path.is_dir():
        return
    leftovers = tuple(f".{name}." for name in (descriptor, *names))  # write_json's, np.save's
    present = sorted(p.name for p in path.iterdir()
                     if not (p.name.startswith(leftovers) and ".tmp" in p.name)
                     and not any(fnmatch.fnmatchcase(p.name, c) for c in concurrent))
    if not present:
        return
    try:
        own = bool(format(path / descriptor) if callable(format) else
                   json.loads((path / descriptor).read_text()).get("format") == format)
    except (OSError, ValueError, TypeError, AttributeError):  # missing, not JSON, no object
        own = False
    foreign = [name for name in present if not own or not any(
        fnmatch.fnmatchcase(name, pattern) for pattern in names)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise RunwayError(f"{flag} {path} holds files this command did not write ({shown}); "
                          "give a new or empty folder, or --overwrite to write into it anyway")


def has_keys(*keys: str) -> Callable[[Path], bool]:
    """A test of a JSON file for :func:`check_own_output`: an object with ``keys``."""
    return lambda path: set(keys) <= json.loads(path.read_text()).keys()


def _check_parents(path: Path, flag: str) -> None:
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunwayError(f"{flag} {path}: {parent} is a file, not a folder")
            return


# --- the train dir ------------------------------------------------------------------------------

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

    def has_training(self) -> bool:
        """Whether it holds training that a new run would resume (a stage, or an experiment's
        run, started there)."""
        return self.path.is_dir() and any(
            p.is_dir() and (p.name in STAGES or p.name.startswith(("split_", "fold_")))
            for p in self.path.iterdir())


# --- the export ---------------------------------------------------------------------------------
# <export base>/<serving name>/<version>/{saved_model.pb, variables/, assets/, assets.extra/}

IMAGE_BYTES = "image_bytes"  # the input of every signature that takes encoded images
META_FILE = "runway_cnn.json"  # in assets/: backbone, task config, preprocessing, signatures
LABELS_FILE = "labels.txt"  # in assets/: one label a line


def version_dirs(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    return sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def next_version(model_dir: Path) -> int:
    versions = version_dirs(model_dir)
    return int(versions[-1].name) + 1 if versions else 1


def resolve_export(path: str | Path) -> Path:
    """A version dir as is; a serving-name dir → its newest version; an export base with one
    model, or a train dir (via its metrics.json or ``export/``) → that model's newest version."""
    path = Path(os.path.abspath(path))
    if (path / "saved_model.pb").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    metrics = TrainDir(path).metrics
    if metrics.exists():
        recorded = read_json(metrics, fix="name the export version dir instead, or run the "
                                          "finetune command again to rewrite it").get("export_path")
        if recorded and (Path(recorded) / "saved_model.pb").exists():
            return Path(recorded)
    versions = version_dirs(path)
    if versions:
        return versions[-1]
    for base in (path, TrainDir(path).export_base):
        models = [p for p in base.iterdir() if version_dirs(p)] if base.is_dir() else []
        if len(models) == 1:
            return version_dirs(models[0])[-1]
        if len(models) > 1:
            names = ", ".join(p.name for p in models)
            raise CheckpointError(f"{base} holds several models ({names}); name one")
    raise CheckpointError(f"no SavedModel export found under {path}")


def read_assets(version_dir: Path) -> tuple[list[str], dict]:
    """An export's labels and ``runway_cnn.json`` metadata."""
    assets = version_dir / "assets"
    try:
        labels = (assets / LABELS_FILE).read_text().splitlines()
        meta = json.loads((assets / META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{version_dir} is not a runway_cnn export (cannot read "
                              f"assets/{LABELS_FILE} and assets/{META_FILE}: {error})") from error
    return labels, meta
