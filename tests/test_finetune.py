"""The spine end to end on test-made photos and a test-made TF-Hub backbone: train → export →
reload in a fresh process → same predictions; stage rules; resume; CLI."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import killed_in_stage2, make_image_folder
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.features import extract_features
from runway_cnn.errors import RunwayError
from runway_cnn.train_dir import StageDir
from runway_cnn.training import callbacks as callbacks_module
from runway_cnn.training import plan as planning
from runway_cnn.training import schedule
from runway_cnn.training.trainer import FineTuner

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    dataset = make_image_folder(root / "looks", CLASSES, per_class=20, size=(40, 72))
    hub = make_tiny_hub_module(root / "hub")
    return root, dataset, hub


def _config(workspace, name, **overrides) -> FinetuneConfig:
    root, dataset, hub = workspace
    settings = dict(dataset_dir=str(dataset), train_dir=str(root / name), model_name=f"hub:{hub}",
                    image_size=32, batch_size=8, stage1_solver="adam", stage1_epochs=25,
                    stage2_epochs=2, learning_rate=1e-2, validation_fraction=0.2,
                    test_fraction=0.2, verbose=0)
    return FinetuneConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def finished_run(workspace):
    return fine_tune(_config(workspace, "run"))


def test_run_writes_metrics_plots_and_export(finished_run):
    train_dir = finished_run.train_dir
    for name in ("metrics.json", "training_curves.png", "splits.json", "data_report.json",
                 "config.json", "stage1/history.csv", "stage2/history.csv"):
        assert (train_dir / name).exists(), name
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"loss", "top1", "top5", "macro_f1", "per_class"}
    assert metrics["label_counts"]["train"] == {c: 12 for c in CLASSES}
    assert metrics["backbone"].startswith("hub:")
    assert metrics["test"]["top1"] >= 0.6  # 4 classes: chance is 0.25
    export = finished_run.export_path
    assert export.name == "1" and export.parent.name == "looks"
    assert (export / "assets" / "labels.txt").read_text().split() == list(CLASSES)


def test_export_reloads_in_a_fresh_process_with_the_same_predictions(finished_run, tmp_path):
    split = finished_run.metrics  # noqa: F841 (the run must be done)
    tuner_paths = json.loads((finished_run.train_dir / "splits.json").read_text())
    root = finished_run.train_dir.parent / "looks"
    files = [str(root / item["source"]) for item in tuner_paths["test"][:6]]
    from runway_cnn.data.pipeline import eval_crops
    images = eval_crops(files, finished_run.backbone.preprocessing, batch_size=6)
    expected = finished_run.task.probabilities(np.asarray(finished_run.model(images)))
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(finished_run.export_path)!r})
        images = np.load({str(tmp_path / 'images.npy')!r})
        out = m.signatures["predict_images"](images=tf.constant(images))
        files = {files!r}
        served = m.signatures["serving_default"](image_bytes=tf.constant(
            [open(f, "rb").read() for f in files]))
        emb = m.signatures["embed"](image_bytes=tf.constant([open(files[0], "rb").read()]))
        print(json.dumps({{"p": out["probabilities"].numpy().tolist(),
                          "served": served["probabilities"].numpy().tolist(),
                          "classes": [[c.decode() for c in row] for row in
                                      served["classes"].numpy()],
                          "scores": served["scores"].numpy().tolist(),
                          "emb": list(emb["embedding"].shape)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["p"], expected, atol=1e-5)
    np.testing.assert_allclose(result["served"], expected, atol=0.05)  # raw bytes: no uint8 cache
    top = np.argsort(-np.asarray(result["served"]), axis=1)
    assert [row[0] for row in result["classes"]] == [CLASSES[i] for i in top[:, 0]]
    assert np.all(np.diff(result["scores"], axis=1) <= 0)
    assert result["emb"] == [1, 16]


def test_stage1_cached_features_equal_uncached(workspace):
    tuner = FineTuner(_config(workspace, "cached", stage2_epochs=0, stage1_epochs=2))
    tuner.stage1()
    split = tuner.dataset.splits["validation"]
    cached = tuner.head.predict(extract_features(tuner.backbone, split.paths, 8), verbose=0)
    from runway_cnn.data.pipeline import eval_crops
    uncached = tuner.model.predict(eval_crops(split.paths, tuner.backbone.preprocessing, 8),
                                   verbose=0)
    np.testing.assert_allclose(cached, uncached, atol=1e-5)


def test_stage1_lbfgs_is_the_logistic_regression_chosen_on_validation(workspace):
    from sklearn.linear_model import LogisticRegression

    from runway_cnn.tasks.heads import feature_scale

    tuner = FineTuner(_config(workspace, "lbfgs", stage1_solver="lbfgs", stage2_epochs=0))
    done = tuner.stage1()
    tried = done["solver"]["tried"]
    assert done["solver"]["C"] == max(tried, key=lambda t: (t["val_top1"], -t["val_log_loss"]))["C"]
    assert not (tuner.train_dir / "stage1" / "history.csv").exists()  # no epochs: no Keras fit
    train, val = (tuner.dataset.splits[s] for s in ("train", "validation"))
    features = tuner.features
    stack = lambda split: np.stack([features[p] for p in split.paths])
    mean, scale = feature_scale(stack(train))
    standardised = lambda split: (stack(split) - mean) / scale
    reference = LogisticRegression(C=done["solver"]["C"], max_iter=2000)
    reference.fit(standardised(train), train.targets)
    logits = tuner.head.predict(stack(val), verbose=0)
    np.testing.assert_allclose(tuner.task.probabilities(logits),
                               reference.predict_proba(standardised(val)), atol=1e-4)
    assert done["validation"]["top1"] == pytest.approx(
        reference.score(standardised(val), val.targets))
    # the solution is what the stage stores: a new tuner on the same train dir loads it back
    again = FineTuner(_config(workspace, "lbfgs", stage1_solver="lbfgs", stage2_epochs=0))
    again.stage1()
    np.testing.assert_allclose(again.head.predict(stack(val), verbose=0), logits, atol=1e-6)


def test_two_class_logistic_head_gives_scikit_learns_probabilities():
    from sklearn.linear_model import LogisticRegression

    from runway_cnn.tasks import get_task
    from runway_cnn.tasks.heads import feature_scale

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype("float32"), rng.integers(0, 2, 60)
    x[y == 1] += 0.8
    x[:, 4] *= 0.1  # below the median spread: scaled by the floor, not its own
    task = get_task("single_label", ["a", "b"])
    head = task.build_head(5)
    chosen = task.fit_head_convex(head, x[:40], y[:40], x[40:], y[40:])
    mean, scale = feature_scale(x[:40])
    assert scale[4] == pytest.approx(np.median(x[:40].std(axis=0)))
    reference = LogisticRegression(C=chosen["C"], max_iter=2000)
    reference.fit((x[:40] - mean) / scale, y[:40])
    np.testing.assert_allclose(task.probabilities(head.predict(x, verbose=0)),
                               reference.predict_proba((x - mean) / scale), atol=1e-5)


def test_stage1_gives_a_barely_varying_feature_no_outsized_weight():
    """A feature almost constant on the training images must not dominate the logits when it
    moves (stage 2's smaller, augmented images move it): its weight stays of the others' size."""
    from runway_cnn.tasks import get_task

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    x = rng.normal(size=(150, 6)).astype("float32")
    x[np.arange(150), y] += 1.5
    x[:, 5] = 1e-4 * (y + rng.normal(size=150))  # informative, but 10,000 times narrower
    task = get_task("single_label", ["a", "b", "c"])
    head = task.build_head(6)
    task.fit_head_convex(head, x[:100], y[:100], x[100:], y[100:])
    kernel = np.abs(head.get_layer("logits").kernel.numpy())
    assert kernel[5].max() < 10 * kernel[:5].max()


def test_stage1_breaks_accuracy_ties_by_validation_log_loss():
    from runway_cnn.tasks import get_task

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(90, 4)).astype("float32"), rng.integers(0, 3, 90)
    x[np.arange(90), y] += 8.0  # separable: most C get the same validation accuracy
    task = get_task("single_label", ["a", "b", "c"])
    chosen = task.fit_head_convex(task.build_head(4), x[:60], y[:60], x[60:], y[60:])
    best = max(t["val_top1"] for t in chosen["tried"])
    tied = [t for t in chosen["tried"] if t["val_top1"] == best]
    assert len(tied) >= 3  # a tie on accuracy along the path
    assert chosen["C"] == min(tied, key=lambda t: t["val_log_loss"])["C"]
    assert chosen["C"] != tied[0]["C"]  # not the strongest penalty, as the old rule chose


def test_stage1_fits_when_a_validation_class_has_no_training_image():
    from runway_cnn.tasks import get_task

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, 2, 40)
    val_x, val_y = rng.normal(size=(6, 4)).astype("float32"), np.array([0, 1, 2, 0, 1, 2])
    task = get_task("single_label", ["a", "b", "c"])
    head = task.build_head(4)
    chosen = task.fit_head_convex(head, x, y, val_x, val_y)
    assert all(np.isfinite(t["val_log_loss"]) for t in chosen["tried"])
    assert task.probabilities(head.predict(val_x, verbose=0))[:, 2].max() < 0.5  # class c unseen


def test_stage2_runs_by_default_planned_to_fit_the_time_budget(workspace, capsys):
    from dataclasses import replace

    tuner = FineTuner(_config(workspace, "planned", stage2_epochs=None))
    assert not tuner.device.gpu  # the CPU default: a 10-minute budget for the whole run
    assert tuner.deadline == pytest.approx(tuner.started + 600 - planning.FINAL_SECONDS)
    stage1 = tuner.stage1()
    stage2 = tuner.stage2(baseline=stage1["validation"]["top1"])
    plan = stage2["plan"]
    assert not stage2.get("skipped") and 1 <= plan["epochs"] <= planning.MAX_EPOCHS
    assert plan["unfreeze"] == "all" and plan["sizes"] == [32] * plan["epochs"]  # the budget
    assert plan["epochs"] >= planning.MIN_FULL_EPOCHS  # fits full-size epochs: no lower sizes
    assert plan["measured"]["size"] == 32  # the first epoch's size: fit reuses the trace
    assert 0 < plan["measured"]["seconds_per_step"] and plan["estimated_seconds"] <= \
        plan["budget_seconds"] < 600
    with tuner.files.stage("stage2").history.open() as f:
        assert len(list(csv.DictReader(f))) == plan["epochs"]  # every planned epoch ran
    said = capsys.readouterr().out
    assert f"stage 2 plan: whole backbone, {plan['epochs']} epoch(s)" in said
    assert "(measured)" in said and "min left" in said
    tuner.device = replace(tuner.device, gpu=True)
    assert tuner.deadline is None  # no default budget on a GPU
    assert FineTuner(_config(workspace, "given", stage2_epochs=2)).deadline is None


def test_a_budget_short_of_one_epoch_trains_the_batches_of_one_that_fit(workspace,
                                                                        monkeypatch, capsys):
    import time

    tuner = FineTuner(_config(workspace, "part", stage2_epochs=None, stage1_epochs=2))
    stage1 = tuner.stage1()
    epoch = tuner._steps_per_epoch(len(tuner._split("train").paths))
    validation_steps = -(-len(tuner._split("validation")) // 8)
    assert epoch >= 3
    # a step of 10 s at 32 px (2.5 s at 16 px) and 60 s left: not one epoch, part of one
    monkeypatch.setattr(FineTuner, "_measure_step", lambda self, model, size, images=None: {
        "size": 16, "seconds_per_step": 2.5, "trace_seconds": 0.0})
    tuner.started = time.monotonic() - (600 - planning.FINAL_SECONDS - 60)
    stage2 = tuner.stage2(baseline=stage1["validation"]["top1"])
    plan = stage2["plan"]
    assert plan["epochs"] == 1 and plan["sizes"] == [32]
    assert plan["why"].startswith("part of one epoch at 32 px fits the budget")
    assert plan["steps"] == planning.steps_that_fit(plan["budget_seconds"], plan["measured"], 32,
                                                    validation_steps)
    assert 1 <= plan["steps"] < epoch
    assert tuner.seconds["image_cache"] > 0  # filled before the plan, not charged
    assert int(tuner.training_model.optimizer.iterations.numpy()) == plan["steps"]
    with tuner.files.stage("stage2").history.open() as f:
        assert len(list(csv.DictReader(f))) == 1  # the part epoch was validated
    assert f"1 epoch(s) at 32 px ({plan['steps']} batches)" in capsys.readouterr().out


def test_building_the_backbone_is_not_charged_to_the_budget(workspace, monkeypatch):
    import time

    from runway_cnn.training import trainer as trainer_module

    build = trainer_module.build_backbone

    def slow(config):  # as the first run converting the ImageNet weights
        time.sleep(2.0)
        return build(config)

    monkeypatch.setattr(trainer_module, "build_backbone", slow)
    tuner = FineTuner(_config(workspace, "setup", stage2_epochs=None))
    left = tuner.deadline - time.monotonic()
    assert tuner.seconds["backbone"] >= 2.0
    assert left > 600 - planning.FINAL_SECONDS - tuner.seconds["data"] - 1.0


def test_the_measuring_steps_leave_weights_and_optimizer_as_they_were(workspace):
    tuner = FineTuner(_config(workspace, "measure", stage2_epochs=None))
    tuner.stage1()
    schedule.unfreeze(tuner.backbone.model, "all")
    model = tuner.training_model
    tuner._compile(model, 0.0)
    before = _snapshot(tuner.model)
    measured = tuner._measure_step(model, 16)
    assert measured["size"] == 16 and measured["seconds_per_step"] > 0
    assert not _changed(before, tuner.model)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in model.optimizer.variables)


def test_a_budget_spent_before_stage2_keeps_stage1_and_says_why(workspace, capsys,
                                                                 monkeypatch):
    tuner = FineTuner(_config(workspace, "tight", stage2_epochs=None, time_budget=0.5))
    stage1 = tuner.stage1()
    after1 = _snapshot(tuner.model)
    monkeypatch.setattr(FineTuner, "_measure_step", None)  # nothing is measured: no time left
    stage2 = tuner.stage2(baseline=stage1["validation"]["top1"])
    assert stage2["skipped"] and stage2["plan"]["measured"] == {}
    assert "image_cache" not in tuner.seconds  # nor were the photos cached for it
    assert stage2["why"].startswith("the --time_budget was spent before stage 2 began (")
    assert "keeping 45 s for the final evaluation and export" in stage2["why"]
    assert not _changed(after1, tuner.model)
    assert "stage 2 skipped: the --time_budget was spent" in capsys.readouterr().out
    monkeypatch.undo()
    again = FineTuner(_config(workspace, "tight", stage2_epochs=None, time_budget=0.5))
    assert again.stage2(baseline=0.0) == stage2  # the stage is done: not planned again


def test_given_sizes_train_one_epoch_each(workspace):
    tuner = FineTuner(_config(workspace, "sizes", stage2_epochs=None, stage2_sizes="16,24,32",
                              patience=0))
    tuner.stage1()
    stage2 = tuner.stage2(baseline=-1.0)
    assert stage2["plan"]["sizes"] == [16, 24, 32] and stage2["plan"]["why"] == "--stage2_sizes"
    with tuner.files.stage("stage2").history.open() as f:
        assert len(list(csv.DictReader(f))) == 3


def _snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: w.numpy().copy() for w in model.weights}


def _changed(before: dict, model: keras.Model) -> set[str]:
    return {w.path for w in model.weights if not np.allclose(before[w.path], w.numpy())}


def test_sizes_a_run_cannot_follow_are_refused_before_training(workspace):
    for sizes, epochs, why in (("16,24,32,48", 2, "4 sizes for --stage2_epochs 2"),
                               ("16,48", None, "48 px is above the input size 32 px"),
                               ("16,24", None, "the last epoch must train at the input size 32")):
        with pytest.raises(RunwayError, match=why):
            FineTuner(_config(workspace, f"bad_sizes_{epochs}_{len(sizes)}",
                              stage2_epochs=epochs, stage2_sizes=sizes))
        assert not (workspace[0] / f"bad_sizes_{epochs}_{len(sizes)}" / "stage1").exists()


def test_stages_train_only_what_they_should(workspace):
    tuner = FineTuner(_config(workspace, "rules", unfreeze="block2", stage2_learning_rate=1e-2))
    start = _snapshot(tuner.model)
    tuner.stage1()
    head = {w.path for w in tuner.head.weights}
    assert _changed(start, tuner.model) == head
    after1 = _snapshot(tuner.model)
    tuner.stage2(baseline=-1.0)  # any validation result beats it: stage-2 weights are kept
    changed = _changed(after1, tuner.model)
    backbone = changed - head
    assert {"block2_conv.kernel", "block2_bn.gamma"} <= backbone
    assert not any(p.startswith("block1") for p in backbone)
    assert not any("moving" in p for p in backbone)  # BatchNorm statistics never move


def test_stage2_never_ends_worse_than_stage1(workspace):
    tuner = FineTuner(_config(workspace, "worse", stage2_learning_rate=50.0))
    stage1 = tuner.stage1()
    after1 = _snapshot(tuner.model)
    stage2 = tuner.stage2(baseline=stage1["validation"]["top1"])
    assert stage2["validation"]["top1"] >= stage1["validation"]["top1"]
    assert stage2["stage1_val_top1"] == stage1["validation"]["top1"]
    if not stage2["improved_on_stage1"]:
        assert not _changed(after1, tuner.model)
        assert stage2["validation_gain"] == 0.0
    else:
        assert stage2["validation_gain"] == pytest.approx(
            stage2["best_val_top1"] - stage1["validation"]["top1"]) and stage2["validation_gain"] > 0


def test_a_run_says_what_stage2_bought_on_validation(workspace, capsys):
    tuner = FineTuner(_config(workspace, "bought", stage2_epochs=2, patience=0))
    tuner.stage1()
    stage2 = tuner.stage2(baseline=-1.0)  # any validation result beats it: kept
    with tuner.files.stage("stage2").history.open() as f:
        best = max(float(row["val_top1"]) for row in csv.DictReader(f))
    assert stage2["best_val_top1"] == best and stage2["validation_gain"] == best + 1.0
    said = capsys.readouterr().out
    assert f"best val_top1 {best:.4f} against stage 1's -1.0000" in said and "kept" in said


def test_interrupted_run_resumes_where_it_stopped(workspace, monkeypatch):
    config = _config(workspace, "resume", stage2_epochs=3, patience=0)
    killed_in_stage2(lambda: fine_tune(config), monkeypatch)
    train_dir = config.train_dir
    stage1_mtime = (workspace[0] / "resume" / "stage1" / "done.json").stat().st_mtime
    result = fine_tune(config)
    assert (result.train_dir / "stage1" / "done.json").stat().st_mtime == stage1_mtime
    epochs = [int(line.split(",")[0]) for line in
              (result.train_dir / "stage2" / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2], train_dir  # epochs 0-1 before the interruption, 2 after it


def test_resuming_with_other_settings_is_refused(finished_run, workspace):
    with pytest.raises(RunwayError, match="other settings.*seed"):
        FineTuner(_config(workspace, "run", seed=7))


def test_backbone_from_a_previous_run(finished_run, workspace):
    tuner = FineTuner(_config(workspace, "chain",
                              model_name=f"run:{finished_run.train_dir}", stage2_epochs=0))
    split = tuner.dataset.splits["validation"]
    ours = extract_features(tuner.backbone, split.paths, 8)
    theirs = extract_features(finished_run.backbone, split.paths, 8)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runway_cnn.finetune", *args],
                          capture_output=True, text=True)


def test_cli_help_explains_every_flag():
    out = _cli("--help")
    assert out.returncode == 0
    for flag in ("--dataset_dir", "--train_dir", "--export_dir", "--model_name",
                 "--image_size", "--batch_size", "--stage1_epochs", "--stage2_epochs",
                 "--learning_rate", "--stage2_learning_rate", "--unfreeze",
                 "--validation_fraction", "--test_fraction", "--seed", "--jit_compile",
                 "--serving_name"):
        assert flag in out.stdout


def test_cli_bad_dataset_is_one_line_without_traceback(tmp_path):
    out = _cli("--dataset_dir", str(tmp_path / "missing"), "--train_dir", str(tmp_path / "t"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert str(tmp_path / "missing") in out.stderr


def test_same_seed_gives_the_same_head(workspace):
    heads = []
    for name in ("seed_a", "seed_b"):
        tuner = FineTuner(_config(workspace, name, stage1_epochs=3, stage2_epochs=0))
        tuner.stage1()
        heads.append([w.numpy() for w in tuner.head.weights])
    for a, b in zip(*heads):
        np.testing.assert_array_equal(a, b)


def test_missing_previous_run_is_a_clear_error(workspace):
    from runway_cnn.errors import CheckpointError

    missing = workspace[0] / "no_such_run"
    with pytest.raises(CheckpointError, match="no_such_run"):
        FineTuner(_config(workspace, "orphan", model_name=f"run:{missing}"))


def test_a_run_that_failed_before_training_can_be_retried_with_other_flags(workspace):
    with pytest.raises(RunwayError, match="unknown backbone"):
        FineTuner(_config(workspace, "typo", model_name="efficientnet_lite9"))
    tuner = FineTuner(_config(workspace, "typo", stage1_epochs=1))  # the corrected command
    assert tuner.backbone.feature_dim == 16


def test_resuming_on_changed_data_is_refused(workspace, tmp_path):
    import shutil

    dataset = tmp_path / "looks"
    shutil.copytree(workspace[1], dataset)
    config = _config(workspace, "changed", dataset_dir=str(dataset), stage1_epochs=1,
                     stage2_epochs=0)
    FineTuner(config).stage1()
    shutil.rmtree(dataset / "circles")
    with pytest.raises(RunwayError, match="changed since the run"):
        FineTuner(config)


def test_a_resumed_stage_keeps_the_best_epoch_logged_before_it_stopped(tmp_path):
    stage = StageDir(tmp_path / "stage2")
    stage.path.mkdir()
    stage.history.write_text("epoch,val_top1\n0,0.75\n1,0.5\n")
    assert callbacks_module._best_so_far(stage, "val_top1", "max", 0.6) == 0.6  # no best file yet
    stage.best_weights.write_bytes(b"")
    assert callbacks_module._best_so_far(stage, "val_top1", "max", 0.6) == 0.75
    assert callbacks_module._best_so_far(stage, "val_top1", "min", 0.6) == 0.5


@pytest.mark.parametrize("flag, value", [("batch_size", 0), ("stage2_epochs", -1),
                                         ("dropout", 1.0), ("top_k", 0),
                                         ("stage1_solver", "sgd"), ("time_budget", -1.0),
                                         ("stage2_sizes", "8,224")])
def test_unusable_flag_values_are_one_clear_error(flag, value):
    with pytest.raises(RunwayError, match=f"--{flag}"):
        FinetuneConfig(dataset_dir="x", **{flag: value})
