"""Refit after selection (``--refit``): the export learns from the photos validation (and a
test split the run made) held out, with the choices validation made; the reported figures stay
the training-split model's; a test split the user gave is never trained on under ``auto``;
``evaluate`` warns on photos the export learned from; a killed refit resumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_image_folder
from helpers import run_cli
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn import evaluate as evaluate_cli
from runway_cnn import finetune as finetune_cli
from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.pipeline import eval_crops
from runway_cnn.errors import RunwayError
from runway_cnn.export_dir import read_assets
from runway_cnn.inference.predictor import Predictor
from runway_cnn.tasks.heads import feature_scale
from runway_cnn.training import refit as refitting
from runway_cnn.training.callbacks import load_model_weights
from runway_cnn.training.trainer import FineTuner

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    pooled = make_image_folder(root / "looks", CLASSES, per_class=10, size=(40, 64))
    given = make_image_folder(root / "given", CLASSES, per_class=5, size=(40, 64),
                              splits=("train", "validation", "test"), seed=1)
    return root, pooled, given, make_tiny_hub_module(root / "hub")


def _config(workspace, name, dataset="looks", **overrides) -> FinetuneConfig:
    root, *_ = workspace
    return FinetuneConfig(**{
        "dataset_dir": str(root / dataset), "train_dir": str(root / name),
        "model_name": f"hub:{root / 'hub'}", "image_size": 32, "batch_size": 8, "stage2_epochs": 0,
        "validation_fraction": 0.2, "test_fraction": 0.2, "verbose": 0, **overrides})


def _stacked(tuner: FineTuner, names) -> tuple[np.ndarray, np.ndarray]:
    split = refitting.union(tuner.dataset, names)
    return tuner._features(split), split.targets


@pytest.fixture(scope="module")
def auto_run(workspace):
    return fine_tune(_config(workspace, "auto"))


def test_auto_refits_on_every_split_the_run_made_with_stage1s_regularisation(auto_run,
                                                                             workspace):
    from sklearn.linear_model import LogisticRegression

    metrics = json.loads((auto_run.train_dir / "metrics.json").read_text())
    refit = metrics["refit"]
    assert refit["refit"] and refit["splits"] == ["train", "validation", "test"]
    assert refit["images"] == 40 and refit["images_by_split"] == {
        "train": 24, "validation": 8, "test": 8}
    assert "test" not in refit  # no photo left that the export did not learn from
    assert refit["figures"].startswith("the validation and test figures are of the model "
                                       "trained on the 24 training photos: the estimate")
    # the export's head is the regression at stage 1's C on all 40 photos' frozen features
    tuner = FineTuner(_config(workspace, "auto"))
    tuner.finished()
    x, y = _stacked(tuner, ("train", "validation", "test"))
    mean, scale = feature_scale(x)
    c = metrics["stages"]["stage1"]["solver"]["C"]
    reference = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    np.testing.assert_allclose(tuner.task.probabilities(tuner.head.predict(x, verbose=0)),
                               reference.predict_proba((x - mean) / scale), atol=1e-4)
    # the reported figures are the training-split model's (stage 1's), not the export's
    assert metrics["validation"] == metrics["stages"]["stage1"]["validation"]
    load_model_weights(tuner.model, tuner.files.stage("stage1").final_weights)
    assert metrics["test"] == tuner.evaluate("test")
    _, meta = read_assets(auto_run.export_path)
    assert meta["refit"]["splits"] == refit["splits"] and meta["refit"]["images"] == 40


def test_the_cli_says_what_the_export_learned_from(workspace):
    code, out, err = run_cli(finetune_cli.main, [
        "--dataset_dir", str(workspace[0] / "looks"), "--train_dir", str(workspace[0] / "cli"),
        "--model_name", f"hub:{workspace[3]}", "--image_size", "32", "--batch_size", "8",
        "--stage2_epochs", "0", "--validation_fraction", "0.2", "--test_fraction", "0.2",
        "--verbose", "0", "--refit", "train_val"])
    assert code == 0, err
    assert ("export: learned from train + validation (32 photos), refit with the choices made "
            "on validation") in out
    assert "trained on train alone (24 photos)" in out
    assert "test, the export itself (refit on train + validation): top1 " in out


def test_a_given_test_split_is_never_trained_on_and_evaluate_warns_on_refit_photos(workspace):
    result = fine_tune(_config(workspace, "given_run", dataset="given"))
    refit = result.metrics["refit"]
    assert refit["splits"] == ["train", "validation"] and refit["images"] == 40
    assert refit["test"]["num_examples"] == 20  # the export itself, on the held-out test photos
    model = str(result.export_path)
    code, out, err = run_cli(evaluate_cli.main, [
        "--model", model, "--dataset_dir", str(workspace[0] / "given"), "--split", "test",
        "--output_dir", str(workspace[0] / "eval_test")])
    assert code == 0, err
    assert "warning" not in out  # none of the test photos was learned from
    assert json.loads((workspace[0] / "eval_test" / "eval.json").read_text())[
        "images_the_model_learned_from"] == 0
    code, out, err = run_cli(evaluate_cli.main, [
        "--model", model, "--dataset_dir", str(workspace[0] / "given"), "--split", "validation",
        "--output_dir", str(workspace[0] / "eval_validation")])
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: the model learned from 20 of these 20 images (its run's "
                        "refit), so these figures are not an estimate of how it does on new "
                        "photos"]


def test_refit_all_trains_on_a_given_test_split_and_says_so(workspace, capsys):
    result = fine_tune(_config(workspace, "given_all", dataset="given", refit="all"))
    assert result.metrics["refit"]["images"] == 60
    assert "--refit all: the export also learns from the test split you gave" in \
        capsys.readouterr().out


def test_refit_none_exports_the_training_split_model(workspace):
    result = fine_tune(_config(workspace, "none", refit="none"))
    assert result.metrics["refit"] == {**result.metrics["refit"], "refit": False,
                                       "splits": ["train"], "images": 24}
    tuner = FineTuner(_config(workspace, "none", refit="none"))
    tuner.finished()
    final = [w.copy() for w in tuner.model.get_weights()]
    load_model_weights(tuner.model, tuner.files.stage("stage1").final_weights)
    for a, b in zip(final, tuner.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_refit_values_are_one_line_errors(workspace):
    with pytest.raises(RunwayError, match="--refit 'everything'"):
        _config(workspace, "bad", refit="everything")
    code, _, err = run_cli(finetune_cli.main, ["--dataset_dir", str(workspace[1]), "--refit",
                                               "everything"])
    assert code == 2 and err.strip().splitlines() == [
        "error: --refit 'everything': must be one of auto, none, train_val, all"]
    code, _, err = run_cli(finetune_cli.main, ["--dataset_dir", str(workspace[1]),
                                               "--refit_stage2", "both"])
    assert code == 2 and err.strip().splitlines() == [
        "error: --refit_stage2 'both': must be one of head, whole"]
    no_validation = ImageDataset("/x", ["a"], {"train": Split(["a.jpg"], np.zeros(1),
                                                              ["a.jpg"])}, [])
    with pytest.raises(RunwayError, match="--refit train_val: this run has no validation split"):
        refitting.refit_splits("train_val", no_validation)
    assert refitting.refit_splits("auto", no_validation) == (("train",), None)


def test_a_run_killed_during_the_refit_resumes_it_without_measuring_again(workspace,
                                                                          monkeypatch):
    from runway_cnn.tasks.single_label.task import SingleLabelTask

    solve = SingleLabelTask.refit_head_convex

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SingleLabelTask, "refit_head_convex", killed)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(_config(workspace, "killed"))
    stage_dir = workspace[0] / "killed" / "refit"
    assert (stage_dir / "selected.json").exists() and not (stage_dir / "done.json").exists()
    selected = json.loads((stage_dir / "selected.json").read_text())["figures"]
    monkeypatch.setattr(SingleLabelTask, "refit_head_convex", solve)
    measured = []
    evaluate = FineTuner.evaluate
    monkeypatch.setattr(FineTuner, "evaluate",
                        lambda self, name: measured.append(name) or evaluate(self, name))
    result = fine_tune(_config(workspace, "killed"))
    assert measured == []  # the split figures are read back, not computed again
    assert result.metrics["test"] == selected["test"] and result.metrics["refit"]["refit"]
    assert result.metrics["refit"]["images"] == 40


def _kept_stage2(workspace, name, **overrides) -> tuple[FineTuner, dict]:
    """A tuner whose stage 2 (one epoch) is kept whatever it scores, its figures selected."""
    tuner = FineTuner(_config(workspace, name, stage2_epochs=1, **overrides))
    stage1 = tuner.stage1()
    tuner.stage2(baseline=-1.0)  # any epoch beats it: stage 2 is kept
    assert tuner._backbone_changed
    tuner.select()
    return tuner, stage1


def _weights(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def test_refit_stage2_whole_repeats_stage2_on_the_refit_photos(workspace):
    tuner, stage1 = _kept_stage2(workspace, "whole", refit_stage2="whole")
    selected = _weights(tuner.backbone.model)
    stage2 = {"plan": json.loads((tuner.train_dir / "stage2" / "plan.json").read_text()),
              "seconds": 1.0, "validation": tuner.evaluate("validation")}
    record = tuner.refit(stage1, stage2)
    assert record["refit"] and record["whole_model"] and record["images"] == 40
    assert "then stage 2 again for the 1 epoch(s) that were best on validation" in \
        record["what"]
    pretrained = FineTuner(_config(workspace, "whole_pretrained")).backbone.model.get_weights()
    moved = _weights(tuner.backbone.model)
    assert any(not np.array_equal(a, b) for a, b in zip(moved, selected))
    assert any(not np.array_equal(a, b) for a, b in zip(moved, pretrained))
    assert json.loads((tuner.train_dir / "refit" / "plan.json").read_text())["kind"] == "whole"


def test_after_a_kept_stage2_the_head_is_refit_on_the_fine_tuned_features(workspace, capsys):
    tuner, stage1 = _kept_stage2(workspace, "head")
    backbone = _weights(tuner.backbone.model)
    stage2 = {"plan": {}, "seconds": 10.0, "validation": tuner.evaluate("validation")}
    record = tuner.refit(stage1, {**stage2, "validation": {
        **stage2["validation"], "top1": -1.0}})  # a stage-2 head any candidate matches
    assert record["refit"] and not record.get("whole_model")
    assert record["what"].startswith("a head on stage 2's fine-tuned backbone")
    for a, b in zip(backbone, tuner.backbone.model.get_weights()):  # the backbone stays
        np.testing.assert_array_equal(a, b)
    again, _ = _kept_stage2(workspace, "head_worse")
    kept = _weights(again.model)
    record = again.refit(stage1, {"seconds": 10.0, "validation": {"top1": 2.0}})
    assert not record["refit"] and "against stage 2's 2.0000" in record["why"]
    for a, b in zip(kept, again.model.get_weights()):  # the selected model is exported
        np.testing.assert_array_equal(a, b)


def test_a_refit_the_budget_cannot_hold_falls_back_to_a_cheaper_one_and_says_so(workspace,
                                                                               capsys):
    tuner, stage1 = _kept_stage2(workspace, "budget", refit_stage2="whole", time_budget=10)
    stage2 = {"plan": {}, "seconds": 1e6, "validation": tuner.evaluate("validation")}
    record = tuner.refit(stage1, {**stage2, "validation": {**stage2["validation"],
                                                           "top1": -1.0}})
    assert record["refit"] and not record.get("whole_model")  # stage 2 again: ~11 days
    assert record["what"].startswith("a head on stage 2's fine-tuned backbone")
    assert "refit: stage 2 again on 40 photos needs about" in capsys.readouterr().out
    assert json.loads((tuner.train_dir / "refit" / "plan.json").read_text())["kind"] == "head"
    spent, _ = _kept_stage2(workspace, "spent", time_budget=10)
    spent.started -= 600  # past its budget now (a spent budget skips stage 2 itself)
    kept = _weights(spent.model)
    record = spent.refit(stage1, {"plan": {"measured": {"size": 16, "seconds_per_step": 0.1}},
                                  "seconds": 10.0, "validation": {"top1": -1.0}})
    line = ("refit: the fine-tuned backbone's features of 40 photos need about 0.0 min, the "
            "--time_budget leaves 0.0 min: the export is stage 2's model, trained on the "
            "training split")
    assert not record["refit"] and record["why"] == line and line in capsys.readouterr().out
    assert refitting.describe(record) == f"export: learned from train (24 photos), not refit " \
        f"({line})"
    for a, b in zip(kept, spent.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_combined_choices_are_the_median_of_the_runs():
    runs = [{"solver": "lbfgs", "C": 0.01, "tried": [1]}, {"solver": "lbfgs", "C": 0.1},
            {"solver": "lbfgs", "C": 0.03}]
    assert refitting.combine_choices(runs) == {"solver": "lbfgs", "C": 0.03}
    per_attribute = [{"C": {"neck": 0.1, "sleeve": 1.0}}, {"C": {"neck": 0.3, "sleeve": 1.0}},
                     {"C": {"neck": 0.1, "sleeve": 3.0}}]
    assert refitting.combine_choices(per_attribute) == {"C": {"neck": 0.1, "sleeve": 1.0}}


def test_an_experiment_exports_one_model_refit_on_every_photo_with_the_median_choice(
        workspace):
    from sklearn.linear_model import LogisticRegression

    code, out, err = run_cli(finetune_cli.main, [
        "--dataset_dir", str(workspace[1]), "--train_dir", str(workspace[0] / "experiment"),
        "--model_name", f"hub:{workspace[3]}", "--image_size", "32", "--batch_size", "8",
        "--stage2_epochs", "0", "--validation_fraction", "0.2", "--verbose", "0", "--kfold", "3",
        "--export_dir", str(workspace[0] / "exports")])
    assert code == 0, err
    assert "export: learned from all 40 labelled photos: stage 1's head (lbfgs, C " in out
    export_path = workspace[0] / "exports" / "looks" / "1"
    assert f"export: {export_path}" in out
    summary = json.loads((workspace[0] / "experiment" / "summary.json").read_text())
    assert summary["runs_finished"] == 3 and summary["export_path"] == str(export_path)
    refit = summary["refit"]
    assert refit["images"] == 40 and refit["splits"] == ["all"] and refit["stage2_kept_in"] == 0
    runs = [json.loads((workspace[0] / "experiment" / f"fold_{i:02d}" / "metrics.json")
                       .read_text()) for i in range(3)]
    assert all(run["refit"]["refit"] is False for run in runs)  # the folds are not refit
    c = float(np.median([run["stages"]["stage1"]["solver"]["C"] for run in runs]))
    assert f"C {c}" in refit["what"] and "median of the 3 runs' choices" in refit["what"]
    tuner = FineTuner(_config(workspace, "experiment_features", refit="none"))
    x = np.concatenate([tuner._features(s) for s in tuner.dataset.splits.values()])
    y = np.concatenate([s.targets for s in tuner.dataset.splits.values()])
    mean, scale = feature_scale(x)
    reference = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    served = Predictor(export_path)
    paths = [p for s in tuner.dataset.splits.values() for p in s.paths][:8]
    probabilities = served.probabilities(eval_crops(paths, served.spec, 8))
    np.testing.assert_allclose(probabilities, reference.predict_proba((x[:8] - mean) / scale),
                               atol=1e-3)
    code, out, err = run_cli(evaluate_cli.main, [
        "--model", str(export_path), "--dataset_dir", str(workspace[1]),
        "--output_dir", str(workspace[0] / "eval_experiment")])
    assert code == 0, err
    assert "warning: the model learned from 40 of these 40 images" in out


def _task_problem(name: str, rng: np.random.Generator):
    """A task of ``name`` and (features, targets) for 80 training and 40 validation images whose
    targets follow the features."""
    from runway_cnn.tasks import get_task

    x = rng.normal(size=(120, 12))
    signal = x @ rng.normal(size=(12, 3)) + 0.5 * rng.normal(size=(120, 3))
    if name == "single_label":
        task, y = get_task(name, ["a", "b", "c"]), signal.argmax(axis=1)
    elif name == "multi_label":
        task, y = get_task(name, ["a", "b", "c"]), (signal > 0).astype(np.float32)
    elif name == "attributes":
        task = get_task(name, ["tone=dark", "tone=light", "cut=a", "cut=b", "cut=c"])
        y = np.stack([(signal[:, 0] > 0).astype(int), signal.argmax(axis=1)], axis=1)
        y[::7, 1] = -1  # unknown cells
    else:
        task, y = get_task(name, ["price"]), (signal[:, :1] * 40 + 300).astype(np.float32)
        task.prepare(y[:80])
    return task, x, y


@pytest.mark.parametrize("name", ["single_label", "multi_label", "attributes", "regression"])
def test_each_tasks_refit_on_the_same_photos_reproduces_the_chosen_head(name):
    rng = np.random.default_rng(3)
    task, x, y = _task_problem(name, rng)
    chosen_head, refit_head = task.build_head(12), task.build_head(12)
    solved = task.fit_head_convex(chosen_head, x[:80], y[:80], x[80:], y[80:])
    done = task.refit_head_convex(refit_head, x[:80], y[:80], solved)
    assert done is not None and all(done[k] == solved[k] for k in done if k != "tried")
    scores = lambda head: task.probabilities(head.predict(x, verbose=0))  # noqa: E731
    np.testing.assert_allclose(scores(chosen_head), scores(refit_head), atol=1e-3, rtol=1e-3)
    more = task.build_head(12)  # on more photos it learns something else, with the same choice
    task.refit_head_convex(more, x, y, solved)
    assert not np.allclose(scores(refit_head), scores(more), atol=1e-2, rtol=1e-2)


def test_the_stage2_plan_keeps_time_for_a_whole_refit_and_says_so(workspace):
    from runway_cnn.training import schedule

    def planned(name, **settings):
        other = FineTuner(_config(workspace, name, stage2_epochs=None, **settings))
        other.stage1()
        schedule.unfreeze(other.backbone.model, "all")
        other._compile(other.training_model, 0.0)
        other.files.stage("stage2").path.mkdir(parents=True, exist_ok=True)
        return other.plan_stage2(other.training_model, other.files.stage("stage2"))

    assert planned("reserve_head").reserved_seconds == 0  # the head refit fits in what is left
    whole = planned("reserve_whole", refit_stage2="whole")  # 40 refit photos, 24 in training
    assert whole.reserved_seconds / (whole.budget_seconds + whole.reserved_seconds) == \
        pytest.approx(40 / 64)
    assert f"{whole.reserved_seconds / 60:.1f} min kept for the refit" in whole.describe()
    assert planned("reserve_none", refit="none", refit_stage2="whole").reserved_seconds == 0


def test_under_stage1_augment_the_refit_trains_through_augmented_images(workspace,
                                                                        monkeypatch):
    from runway_cnn.training import trainer as trainer_module

    passes = []
    extract = trainer_module.extract_features
    monkeypatch.setattr(trainer_module, "extract_features",
                        lambda *args, **kwargs: passes.append(1) or extract(*args, **kwargs))
    result = fine_tune(_config(workspace, "augment", stage1_augment=True, stage1_epochs=2,
                               stage1_solver="adam"))
    refit = result.metrics["refit"]
    assert refit["refit"] and refit["images"] == 40 and passes == []  # no cached features
    assert refit["what"].startswith("stage 1's head: Adam for the")
