"""Inputs and settings checked before any work: the time budget's odd values, the answer a task's
``evaluate`` must give, the split checks shared by class folders and CSV manifests, and the
types of every setting of the Python API."""
from __future__ import annotations

import csv
import inspect
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_image_folder
from helpers import assert_one_line_error, run_cli
from runway_cnn import FinetuneConfig
from runway_cnn import finetune as finetune_cli
from runway_cnn.errors import DataError, RunwayError
from runway_cnn.inference.attribute_index import (
    AttributeSearch,
    build_attribute_index,
    query_attribute_index,
)
from runway_cnn.inference.batch import predict
from runway_cnn.inference.evaluation import evaluate_model, evaluation_images
from runway_cnn.inference.retrieval.evaluation import evaluate_image_index
from runway_cnn.inference.retrieval.query import query_image_index
from runway_cnn.inference.retrieval.store import build_image_index
from runway_cnn.tasks import TASKS, Task
from runway_cnn.training import plan as planning
from runway_cnn.training.datasets import convert_dataset, load_dataset
from runway_cnn.training.trainer import FineTuner
from tiny_models import make_tiny_hub_module


def _budget_stop(monkeypatch, deadline: float, **settings) -> tuple[planning.BudgetStop, list]:
    """A stop on a fake clock (``now[0]``, from t = 100) at the start of epoch 0 of 10 batches."""
    now = [100.0]
    monkeypatch.setattr(planning.time, "monotonic", lambda: now[0])
    stop = planning.BudgetStop(deadline=deadline, sizes=[224], steps=10, **settings)
    stop.set_model(SimpleNamespace(stop_training=False))
    stop.on_epoch_begin(0)
    return stop, now


def _batch(stop: planning.BudgetStop, now: list, seconds: float) -> bool:
    """One batch of ``seconds``; whether the stop ended training after it."""
    stop.on_train_batch_begin(0)
    now[0] += seconds
    stop.on_train_batch_end(0)
    return stop.model.stop_training


# --- 1. the time budget -------------------------------------------------------------------------

@pytest.mark.parametrize("minutes", ["inf", "1e309", "Infinity"])
def test_an_infinite_time_budget_means_no_budget(tmp_path, minutes):
    config = finetune_cli.parse_args(["--dataset_dir", str(tmp_path), "--time_budget", minutes])
    assert config.time_budget == 0.0  # what --time_budget 0 says: none
    assert FinetuneConfig(dataset_dir=str(tmp_path), time_budget=float(minutes)).time_budget == 0


def test_a_far_deadline_over_fast_steps_trains_every_batch(monkeypatch):
    """A budget of 1e306 minutes is finite, but its seconds over a microsecond step are more
    batches than an int holds: the stop compares them as floats."""
    stop, now = _budget_stop(monkeypatch, deadline=6e307)
    assert not any([_batch(stop, now, 1e-6) for _ in range(10)])
    assert stop.stopped_at_batch is None


def test_a_deadline_passed_after_the_first_batch_stops_there(monkeypatch):
    stop, now = _budget_stop(monkeypatch, deadline=105.0, validation_seconds=1.0)
    assert _batch(stop, now, 10.0) and stop.stopped_at_batch == 1  # the first: t = 110


@pytest.mark.parametrize("minutes", ["-inf", "-1e9", "nan"])
def test_a_negative_or_nan_time_budget_is_one_line_naming_the_flag(tmp_path, minutes):
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", str(tmp_path),
                                                  "--time_budget", minutes])
    assert_one_line_error(code, stderr, "--time_budget", "must be 0 (no budget) or more")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-class folder of 8 photos a class and the tiny TF-Hub backbone."""
    root = tmp_path_factory.mktemp("settings")
    return root, make_image_folder(root / "photos", per_class=8, size=(32, 48)), \
        make_tiny_hub_module(root / "hub")


def test_a_spent_budget_skips_given_stage2_epochs_and_says_so(tiny, capsys):
    root, photos, hub = tiny
    tuner = FineTuner(FinetuneConfig(
        dataset_dir=str(photos), train_dir=str(root / "spent"), model_name=f"hub:{hub}",
        image_size=32, batch_size=8, stage2_epochs=2, time_budget=0.001,
        validation_fraction=0.25, test_fraction=0.25, verbose=0))
    stage1 = tuner.stage1()
    stage2 = tuner.stage2(baseline=stage1["validation"]["top1"])
    out = capsys.readouterr().out
    assert stage2["skipped"] and stage2["why"].startswith("the --time_budget was spent")
    assert "stage 2 skipped: the --time_budget was spent" in out
    assert "min left" not in out and "stage 2 stopped" not in out


# --- 2. what a task's evaluate must answer ------------------------------------------------------

class _GuideTask(Task):
    """A task as docs/adding_a_task.md's table has one write ``evaluate``: its own figure only."""

    name = "guide_task"

    def evaluate(self, targets, scores):
        return {"accuracy": float(np.mean(np.argmax(scores, -1) == targets))}


def test_an_evaluate_answer_without_the_monitored_figure_is_one_line_naming_it():
    targets, scores = np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]])
    run = SimpleNamespace(_split=lambda name: SimpleNamespace(targets=targets),
                          predict_probabilities=lambda split: scores,
                          task=_GuideTask(["a", "b"]), train_dir="runs/x")
    with pytest.raises(RunwayError) as error:
        FineTuner.evaluate(run, "validation")  # what the trainer reads after each stage
    message = str(error.value)
    assert "\n" not in message
    for named in ("task guide_task", "_GuideTask.evaluate", "'loss'", "'num_examples'"):
        assert named in message, (named, message)

    class Complete(_GuideTask):
        def evaluate(self, targets, scores):
            return {**super().evaluate(targets, scores), "loss": 0.1, "num_examples": 2}

    run.task = Complete(["a", "b"])
    assert FineTuner.evaluate(run, "validation")["num_examples"] == 2


# --- 3. splits: one check for class folders and CSV manifests -----------------------------------

def _labelled(root: Path, per_class: dict[str, int]) -> tuple[Path, Path]:
    """Class folders of ``per_class`` photos (16 px) under ``root/photos`` and the same labels as
    a ``labels.csv`` manifest."""
    photos = root / "photos"
    for name, count in per_class.items():
        make_image_folder(photos, [name], per_class=count, size=(16, 16))
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label"])
        writer.writerows((f"{p.parent.name}/{p.name}", p.parent.name)
                         for p in sorted(photos.glob("*/*.jpg")))
    return photos, root / "labels.csv"


def _load(photos: Path, labels_csv: Path | None, tmp_path: Path, **settings):
    return load_dataset(FinetuneConfig(dataset_dir=str(photos), labels_csv=labels_csv and str(
        labels_csv), train_dir=str(tmp_path / "run"), **settings), tmp_path / "work")


@pytest.mark.parametrize("rare", [1, 2])
def test_a_label_too_rare_for_every_split_is_refused_from_a_csv_as_from_folders(tmp_path, rare):
    photos, labels_csv = _labelled(tmp_path, {"a": 6, "b": 6, "c": 6, "zebra": rare})
    with pytest.raises(DataError, match="class folder .*zebra has"):
        _load(photos, None, tmp_path)
    with pytest.raises(DataError) as error:
        _load(photos, labels_csv, tmp_path)
    message = str(error.value)
    assert f"label 'zebra' of --labels_csv {labels_csv} has {rare} usable image(s), too few " \
           "for a train/validation/test split: add photos of it, or drop its rows" == message


def test_a_csv_label_a_split_misses_is_refused_as_in_folders(tmp_path):
    """Three labels of 6 photos and one of 3, a quarter for validation: stratified, the rare
    one reaches no validation photo (its share rounds down to nothing); a CSV run trained on it
    and never validated it, without a word."""
    photos, labels_csv = _labelled(tmp_path, {"a": 6, "b": 6, "c": 6, "zebra": 3})
    for labels in (None, labels_csv):
        with pytest.raises(DataError, match="the validation split carved from .* has no image "
                                            "of label.s. zebra; add images of them"):
            _load(photos, labels, tmp_path, validation_fraction=0.25, test_fraction=0.1)


@pytest.mark.parametrize("fractions", [(0.0, 0.1), (-0.1, 0.1), (0.2, -0.1), (0.6, 0.5)])
def test_split_fractions_are_checked_for_a_csv_as_for_folders(tmp_path, fractions):
    photos, labels_csv = _labelled(tmp_path, {"a": 6, "b": 6})
    validation, test = fractions
    for labels in (None, labels_csv):
        with pytest.raises(DataError, match=f"--validation_fraction {validation} and "
                                            f"--test_fraction {test}: need 0 < validation"):
            _load(photos, labels, tmp_path, validation_fraction=validation, test_fraction=test)


def test_a_split_of_few_photos_is_a_warning_saying_how_many(tmp_path):
    photos, labels_csv = _labelled(tmp_path, {name: 8 for name in "abcd"})
    for labels in (None, labels_csv):
        dataset, _ = _load(photos, labels, tmp_path)
        line = dataset.summary_line().splitlines()[-1]
        assert line == ("warning: few photos to measure on (validation 4, test 4): figures on "
                        "fewer than 20 are not reliable, one photo moves an accuracy by 25 "
                        "points; add photos, or raise --validation_fraction / --test_fraction")
    big, _ = _labelled(tmp_path / "big", {name: 100 for name in "ab"})
    assert "warning" not in _load(big, None, tmp_path)[0].summary_line()


# --- 4. evaluate: a split's own unusable files --------------------------------------------------

def test_evaluate_on_a_split_folder_counts_only_its_own_unusable_files(tmp_path):
    root = make_image_folder(tmp_path / "photos", ["a", "b"], per_class=3, size=(16, 16),
                             splits=["train", "validation", "test"])
    for name in ("bad_1.jpg", "bad_2.jpg"):
        (root / "train" / "a" / name).write_text("not a photo")
    (root / "validation" / "b" / "bad.jpg").write_text("not a photo")
    skipped = {split: evaluation_images(root, split).skipped
               for split in ("train", "validation", "test")}
    assert skipped == {"train": 2, "validation": 1, "test": 0}


# --- 5. every setting of the Python API of its type, named when not -----------------------------

PLAIN = {"int", "float", "str", "bool", "Path", "os.PathLike", "None"}


def _kinds(annotation) -> list[str]:
    return [kind.strip() for kind in str(annotation).split("|")]


def _wrong(annotation) -> object:
    """A value of the wrong type for ``annotation``: a number for text, text for the rest."""
    return 123 if {"str", "Path", "os.PathLike"} & set(_kinds(annotation)) else "1"


def _task_options():
    return [(name, f) for name in TASKS for f in TASKS.get(name).options_class.fields()]


@pytest.mark.parametrize("task, field", _task_options(),
                         ids=[f"{name}-{f.name}" for name, f in _task_options()])
def test_every_task_option_of_a_wrong_type_is_one_line_naming_it(tmp_path, task, field):
    wrong = {field.name: _wrong(field.type)}
    with pytest.raises(RunwayError, match=f"--{field.name} {wrong[field.name]!r}: must be"):
        FinetuneConfig(dataset_dir=str(tmp_path), task=task, **wrong)
    with pytest.raises(RunwayError, match=f"--{field.name} {wrong[field.name]!r}: must be"):
        TASKS.get(task).checked_options(wrong)  # what a task built from Python checks


def test_numpy_numbers_are_plain_numbers_in_task_options(tmp_path):
    config = FinetuneConfig(dataset_dir=str(tmp_path), task="attributes",
                            min_count=np.int64(3))
    assert config.task_options["min_count"] == 3 and type(config.task_options["min_count"]) is int


ENTRY_POINTS = [evaluate_model, predict, build_image_index, query_image_index,
                evaluate_image_index, build_attribute_index, query_attribute_index,
                AttributeSearch, convert_dataset]


def _settings():
    """(entry point, parameter) for each parameter of a plain type (numbers, text, paths,
    True/False) of every Python API entry point but ``fine_tune`` (FinetuneConfig's own)."""
    found = []
    for entry in ENTRY_POINTS:
        for p in inspect.signature(entry).parameters.values():
            if p.name != "self" and isinstance(p.annotation, str) and \
                    set(_kinds(p.annotation)) <= PLAIN:
                found.append((entry, p))
    return found


@pytest.mark.parametrize("entry, parameter", _settings(),
                         ids=[f"{e.__name__}-{p.name}" for e, p in _settings()])
def test_every_api_setting_of_a_wrong_type_is_one_line_naming_it(tmp_path, entry, parameter):
    required = {p.name: "x" for p in inspect.signature(entry).parameters.values()
                if p.default is p.empty and p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
    wrong = _wrong(parameter.annotation)
    with pytest.raises(RunwayError, match=f"^--{parameter.name} {wrong!r}: must be [^;]*$"):
        entry(**{**required, parameter.name: wrong})
