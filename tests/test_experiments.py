"""Repeated experiments on test-made photos and the tiny TF-Hub backbone: --num_splits runs and
their summary, resume, k-fold folds, the FineTuner hooks that share work between runs, plots."""
from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from runway_cnn import FinetuneConfig
from runway_cnn.data import folders as data
from runway_cnn.data.splits import stratified_split
from runway_cnn.tasks import SingleLabelTask
from runway_cnn.training import experiments
from runway_cnn import report
from runway_cnn.training import trainer as trainer_module
from runway_cnn.errors import RunwayError
from runway_cnn.finetune import parse_args
from runway_cnn.data.pipeline import eval_crops
from runway_cnn.training.trainer import FineTuner
from conftest import make_image_folder
from tiny_models import make_tiny_hub_module

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    dataset = make_image_folder(root / "looks", CLASSES, per_class=10, size=(40, 72))
    return root, dataset, make_tiny_hub_module(root / "hub")


def _config(workspace, name, **overrides) -> FinetuneConfig:
    root, dataset, hub = workspace
    settings = dict(dataset_dir=str(dataset), train_dir=str(root / name), model_name=f"hub:{hub}",
                    image_size=32, batch_size=8, stage1_solver="adam", stage1_epochs=3,
                    stage2_epochs=0, learning_rate=1e-2, validation_fraction=0.2,
                    test_fraction=0.2, verbose=0)
    return FinetuneConfig(**{**settings, **overrides})


class _Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def experiment(workspace):
    """``num_splits=3``, killed in stage 1 of split_01, then the same command again. Returns
    (config, summary, split_00's done.json mtime before the resume, extract_features calls per
    session)."""
    config = _config(workspace, "exp", num_splits=3)
    calls = []
    original_features = experiments.extract_features
    original_callbacks = trainer_module.stage_callbacks

    def counting_features(*args, **kwargs):
        calls[-1] += 1
        return original_features(*args, **kwargs)

    def interrupting(stage_dir, *args):
        callbacks = original_callbacks(stage_dir, *args)
        if stage_dir.path.parent.name == "split_01":
            def stop(epoch, logs):
                if epoch == 1:
                    raise _Interrupt()
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=stop))
        return callbacks

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments, "extract_features", counting_features)
        mp.setattr(trainer_module, "stage_callbacks", interrupting)
        calls.append(0)
        with pytest.raises(_Interrupt):
            experiments.run_experiment(config)
        mp.setattr(trainer_module, "stage_callbacks", original_callbacks)
        root = workspace[0] / "exp"
        assert (root / "split_00" / "done.json").exists()
        assert not (root / "split_01" / "done.json").exists()
        mtime = (root / "split_00" / "done.json").stat().st_mtime_ns
        calls.append(0)
        summary = experiments.run_experiment(config)
    return config, summary, mtime, calls


def test_num_splits_writes_every_run_and_a_summary_of_them(experiment, workspace):
    config, summary, _, _ = experiment
    root = workspace[0] / "exp"
    assert summary["complete"] and summary["runs_finished"] == 3
    names = [r["run"] for r in summary["runs"]]
    assert names == ["split_00", "split_01", "split_02"]
    top1 = []
    for name in names:
        metrics = json.loads((root / name / "metrics.json").read_text())
        top1.append(metrics["test"]["top1"])
        assert metrics["export_path"] is None  # experiment runs are not exported
    agg = summary["aggregate"]["top1"]
    assert agg["mean"] == pytest.approx(np.mean(top1))
    assert agg["std"] == pytest.approx(np.std(top1, ddof=1))
    assert (agg["min"], agg["max"]) == (min(top1), max(top1))
    for key in ("top4", "macro_f1", "stage1_seconds", "stage2_seconds", "run_seconds"):  # 4 classes
        assert set(summary["aggregate"][key]) == {"mean", "std", "min", "max"}
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert [r["run"] for r in rows] == names + ["mean", "std", "min", "max"]
    assert float(rows[3]["top1"]) == pytest.approx(np.mean(top1))
    assert json.loads((root / "summary.json").read_text()) == summary
    counts = np.asarray(summary["combined"]["confusion_matrix"])  # the task sums them
    assert counts.sum() == sum(r["num_test"] for r in summary["runs"])
    for png in ("split_accuracy.png", "confusion_matrix.png"):
        assert (root / png).stat().st_size > 1000


def test_splits_are_stratified_draws_over_all_images_with_derived_seeds(experiment, workspace):
    config, summary, _, _ = experiment
    root = workspace[0] / "exp"
    all_sources = {f"{c}/{c}_{i:03d}.jpg" for c in CLASSES for i in range(10)}
    tests = []
    for run in summary["runs"]:
        splits = json.loads((root / run["run"] / "splits.json").read_text())
        sets = {name: {item["source"] for item in items} for name, items in splits.items()}
        assert set.union(*sets.values()) == all_sources
        assert sum(len(s) for s in sets.values()) == len(all_sources)  # disjoint
        assert [len(sets[s]) for s in ("train", "validation", "test")] == [24, 8, 8]
        tests.append(sets["test"])
    assert [r["seed"] for r in summary["runs"]] == [0, 1, 2]
    assert tests[0] != tests[1] != tests[2]
    # split i is the split a single run with --seed i draws on the same folder
    single = data.scan_image_folder(workspace[1], validation_fraction=0.2, test_fraction=0.2,
                                    seed=1)
    assert set(single.splits["test"].sources) == tests[1]


def test_resume_skips_finished_splits_and_reuses_the_features(experiment, workspace):
    _, summary, mtime, calls = experiment
    root = workspace[0] / "exp"
    assert (root / "split_00" / "done.json").stat().st_mtime_ns == mtime
    epochs = [int(line.split(",")[0]) for line in
              (root / "split_01" / "stage1" / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2]  # epochs 0-1 before the interruption, 2 after it
    assert calls == [1, 0]  # features of all images once; the resumed session loaded them
    assert (root / "features.npz").exists()


def test_report_plots_an_experiment(experiment, workspace):
    root = workspace[0] / "exp"
    written = report.report(root)
    assert root / "split_accuracy.png" in written
    assert root / "split_02" / "training_curves.png" in written
    with pytest.raises(RunwayError, match="does not exist"):
        report.report(root / "missing")


def test_kfold_folds_are_disjoint_stratified_and_cover_the_data(workspace):
    labels = np.repeat(np.arange(4), 10)
    config = _config(workspace, "kfold", kfold=4)
    plans = experiments.plan_runs(config, SingleLabelTask(list(CLASSES)), labels)
    assert [p.name for p in plans] == ["fold_00", "fold_01", "fold_02", "fold_03"]
    tests = [p.indices["test"] for p in plans]
    assert sorted(np.concatenate(tests).tolist()) == list(range(40))  # disjoint and covering
    for plan in plans:
        parts = [plan.indices[s] for s in ("train", "validation", "test")]
        assert sorted(np.concatenate(parts).tolist()) == list(range(40))
        assert set(labels[plan.indices["test"]]) == {0, 1, 2, 3}


def test_experiment_flags(workspace):
    config = parse_args(["--dataset_dir", str(workspace[1]), "--kfold", "5"])
    assert (config.kfold, config.num_splits) == (5, 0)
    for bad, match in (({"kfold": 3, "num_splits": 2}, "not both"), ({"kfold": 1}, "at least 2"),
                       ({"num_splits": 2, "test_fraction": 0.0}, "test_fraction")):
        with pytest.raises(RunwayError, match=match):
            experiments.check_experiment(_config(workspace, "bad", **bad))


def test_hooks_share_features_images_and_backbone_between_runs(workspace):
    """A FineTuner given an experiment's shared work evaluates as one that computes everything;
    once stage 2 has changed the backbone it stops using the stale features; the backbone is
    reset for the next run."""
    config = _config(workspace, "hooks", stage2_epochs=1, stage2_learning_rate=1e-2,
                     unfreeze="all")
    dataset = data.scan_image_folder(workspace[1], validation_fraction=0.2, test_fraction=0.2)
    pool = dataset.pooled()
    shared = experiments.SharedWork(config, pool, workspace[0])
    initial = [w.copy() for w in shared.backbone.model.get_weights()]
    split = dataset.resplit(stratified_split(pool.targets, 0.2, 0.2, seed=0))
    tuner = FineTuner(config, dataset=split, backbone=shared.backbone, features=shared.features)
    test = tuner.dataset.splits["test"]

    def from_files():
        logits = tuner.model.predict(eval_crops(test.paths, tuner.backbone.preprocessing, 8),
                                     verbose=0)
        return tuner.task.probabilities(logits)

    tuner.stage1()
    np.testing.assert_allclose(tuner.predict_probabilities(test), from_files(), atol=1e-5)
    assert tuner.stage2(baseline=-1.0)["improved_on_stage1"]  # any result beats -1: kept
    assert not all(np.allclose(a, b) for a, b in zip(initial,
                                                      shared.backbone.model.get_weights()))
    np.testing.assert_allclose(tuner.predict_probabilities(test), from_files(), atol=1e-5)
    shared.reset_backbone()
    for a, b in zip(initial, shared.backbone.model.get_weights()):
        np.testing.assert_array_equal(a, b)
