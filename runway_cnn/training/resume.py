"""Resuming a run: the settings and data of a train dir checked against the run's, and the
stages an earlier process finished."""
from __future__ import annotations

from pathlib import Path

from runway_cnn.backbones.factory import current_backbone_settings
from runway_cnn.data.dataset import ImageDataset
from runway_cnn.errors import RunwayError
from runway_cnn.json_io import read_json, write_json
from runway_cnn.output_checks import check_own_output, has_keys
from runway_cnn.train_dir import WORKER_TEMP, StageDir, TrainDir
from runway_cnn.training.config import FinetuneConfig

# settings that may differ between a run and its resumption without invalidating it (a train
# dir may be moved)
_RESUMABLE = {"verbose", "export_dir", "serving_name", "top_k", "train_dir",
              "worker_timeout", "overwrite"}
# a config.json with the settings every run has written since the first version: a run's folder
_OWN_CONFIG = has_keys("dataset_dir", "train_dir", "model_name", "stage1_epochs")


def check_resume(train_dir: Path, config: FinetuneConfig) -> None:
    """Refuses output folders that are files or inside the dataset, a train dir holding files
    no run wrote (no run's ``config.json``) unless ``--overwrite``, and resuming training that
    was started with other settings; a train dir with no training in it yet (say, a run that
    stopped at a typo in a flag) is simply reused."""
    config.check_outputs()
    path = TrainDir(train_dir).config
    check_own_output(train_dir, path.name, _OWN_CONFIG, ("*",), config.overwrite, "--train_dir",
                     concurrent=(f"{WORKER_TEMP}*",))  # the other workers' folders
    if config.overwrite and not _is_run_folder(path):
        clashing = TrainDir(train_dir).state_files()
        if clashing:  # --overwrite replaces files; it never makes them a finished run's
            raise RunwayError(f"--train_dir {train_dir} --overwrite: it holds files no run wrote "
                              f"under the names a run reads back as an earlier run's state "
                              f"({', '.join(clashing[:4])}); nothing was written: give a new "
                              "--train_dir, or move those files")
    new = config.to_dict()
    if path.exists() and TrainDir(train_dir).has_training():
        old = read_json(path, fix="use a new --train_dir (the run's settings cannot be checked)")
        defaults = {f.name: f.default for f in FinetuneConfig.fields()}
        old = current_backbone_settings(old)  # a run of an older version: its backbone flags
        # a setting the old run did not know yet counts as its default (flags added later)
        changed = sorted(k for k in new if k not in _RESUMABLE
                         and old.get(k, defaults.get(k)) != new[k])
        if changed:
            raise RunwayError(f"{train_dir} holds a run with other settings ({', '.join(changed)}); "
                              "use a new --train_dir or the same flags to resume")
    train_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, new, indent=2)


def check_same_data(dataset: ImageDataset, train_dir: Path) -> None:
    """A resumed run must see the classes and splits it started with."""
    path = TrainDir(train_dir).splits
    if not (path.exists() and TrainDir(train_dir).has_training()):
        return
    old = read_json(path, fix="use a new --train_dir (the run's images cannot be checked)")
    new = {name: [src for src in split.sources] for name, split in dataset.splits.items()}
    if {k: [item["source"] for item in v] for k, v in old.items()} != new:
        raise RunwayError(f"the images or classes of {dataset.root} changed since the run in "
                          f"{train_dir} started; use a new --train_dir")


def _is_run_folder(config_path: Path) -> bool:
    try:
        return _OWN_CONFIG(config_path)
    except (OSError, ValueError, TypeError, AttributeError):  # missing, not JSON, no object
        return False


def mark_done(stage_dir: StageDir, summary: dict) -> dict:
    """Writes a finished stage's summary (``done.json``: a resumed run skips the stage)."""
    write_json(stage_dir.done, summary, indent=2)
    return summary


def stage_done(stage_dir: StageDir) -> dict | None:
    """A finished stage's summary (``done.json``); None while the stage is not done."""
    marker = stage_dir.done
    if not marker.exists():
        return None
    return read_json(marker, fix=f"delete it to run {stage_dir.name} again")
