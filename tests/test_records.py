"""What the records say an export learned from is what it learned from: ``metrics.json``, the
export's metadata and the printed line agree in every refit path, and ``evaluate`` tells the
photos the export learned from by their content, wherever they lie."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import make_image_folder
from helpers import run_cli
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn import evaluate as evaluate_cli
from runway_cnn import finetune as finetune_cli
from runway_cnn.data.pipeline import content_keys
from runway_cnn.export_dir import read_assets
from runway_cnn.training.trainer import FineTuner

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    make_image_folder(root / "looks", CLASSES, per_class=10, size=(40, 64))
    make_image_folder(root / "given", CLASSES, per_class=5, size=(40, 64),
                      splits=("train", "validation", "test"), seed=1)
    make_tiny_hub_module(root / "hub")
    return root


def _flags(root, dataset: str, train_dir: str, *more: str) -> list[str]:
    return ["--dataset_dir", str(root / dataset), "--train_dir", str(root / train_dir),
            "--model_name", f"hub:{root / 'hub'}", "--image_size", "32", "--batch_size", "8",
            "--stage2_epochs", "0", "--validation_fraction", "0.2", "--test_fraction", "0.2",
            "--verbose", "0", *more]


def _evaluate(root, model, dataset, name: str, *more: str) -> tuple[dict, list[str]]:
    """``evaluate`` of ``model`` on ``dataset``: its eval.json and its warning / note lines."""
    code, out, err = run_cli(evaluate_cli.main, ["--model", str(model), "--dataset_dir",
                                                 str(dataset), "--output_dir",
                                                 str(root / name), *more])
    assert code == 0, err
    said = [line for line in out.splitlines() if line.startswith(("warning:", "note:"))]
    return json.loads((root / name / "eval.json").read_text()), said


def test_content_keys_match_copies_of_a_photo_and_nothing_else(tmp_path):
    photos = make_image_folder(tmp_path / "a", ("checks", "circles"), per_class=2)
    copy = shutil.copytree(photos, tmp_path / "b")
    files = sorted(str(p) for p in photos.rglob("*.jpg"))
    copies = [f.replace(str(photos), str(copy)) for f in files]
    keys = content_keys(files)
    assert keys == content_keys(copies) and len(set(keys)) == 4
    (copy / "checks" / "checks_000.jpg").write_bytes(b"\0" + open(files[0], "rb").read())
    assert content_keys(copies)[0] != keys[0] and content_keys(copies)[1:] == keys[1:]


def test_a_skipped_refit_records_the_training_photos_everywhere(workspace, monkeypatch):
    """A kept stage 2 whose head has no convex solver is not refit: metrics.json, the export's
    metadata, the printed line and ``evaluate`` all say the export learned from train."""
    stage2 = FineTuner.stage2
    monkeypatch.setattr(FineTuner, "stage2",  # any epoch beats the baseline: stage 2 is kept
                        lambda self, baseline: stage2(self, -1.0))
    flags = _flags(workspace, "looks", "skipped", "--stage2_epochs", "1",
                   "--stage1_solver", "adam", "--stage1_epochs", "2")
    code, out, err = run_cli(finetune_cli.main, flags)
    assert code == 0, err
    assert ("export: learned from train (24 photos), not refit (stage 2 was kept and the head "
            "has no convex solver to refit on its features)") in out
    refit = json.loads((workspace / "skipped" / "metrics.json").read_text())["refit"]
    assert not refit["refit"]
    assert (refit["splits"], refit["images"], refit["images_by_split"]) == (
        ["train"], 24, {"train": 24})
    export = workspace / "skipped" / "export" / "looks" / "1"
    _, meta = read_assets(export)
    assert meta["refit"]["splits"] == ["train"] and meta["refit"]["images"] == 24
    train = json.loads((workspace / "skipped" / "splits.json").read_text())["train"]
    learned = (export / "assets" / "learned_from.txt").read_text().split()
    assert sorted(learned) == sorted(content_keys(
        [str(workspace / "looks" / item["source"]) for item in train]))
    result, said = _evaluate(workspace, export, workspace / "looks", "eval_skipped")
    assert result["images_the_model_learned_from"] == 24
    assert said == ["warning: the model learned from 24 of these 40 images (its run's refit), "
                    "so these figures are not an estimate of how it does on new photos"]


@pytest.fixture(scope="module")
def given_run(workspace):
    """A run on a dataset with split folders: its export learned from train + validation."""
    result = fine_tune(FinetuneConfig(**{
        "dataset_dir": str(workspace / "given"), "train_dir": str(workspace / "given_run"),
        "model_name": f"hub:{workspace / 'hub'}", "image_size": 32, "batch_size": 8,
        "stage2_epochs": 0, "verbose": 0}))
    assert result.metrics["refit"]["splits"] == ["train", "validation"]
    return result


def test_evaluate_counts_the_photos_learned_from_by_content(given_run, workspace):
    """The run's own validation folder given as the dataset, a copy of the dataset and a moved
    train dir are all counted; a test split the export never saw stays at 0."""
    export = given_run.export_path
    result, said = _evaluate(workspace, export, workspace / "given" / "validation", "own_val")
    assert result["images_the_model_learned_from"] == 20 and said[0].startswith(
        "warning: the model learned from 20 of these 20 images")
    copy = shutil.copytree(workspace / "given", workspace / "given_copy")
    result, said = _evaluate(workspace, export, copy, "copy_train", "--split", "train")
    assert result["images_the_model_learned_from"] == 20 and len(said) == 1
    result, said = _evaluate(workspace, export, copy, "copy_test", "--split", "test")
    assert result["images_the_model_learned_from"] == 0 and said == []
    moved = shutil.move(str(given_run.train_dir), str(workspace / "given_run_moved"))
    try:
        result, _ = _evaluate(workspace, f"{moved}/export/given/1", copy, "moved_validation",
                              "--split", "validation")
        assert result["images_the_model_learned_from"] == 20
    finally:
        shutil.move(moved, str(given_run.train_dir))


def test_an_export_that_cannot_tell_says_so_in_one_line(given_run, workspace):
    """An export without content keys (an older version's) evaluated away from its run's
    dataset: the count is unknown (null), and one line says so."""
    old = shutil.copytree(given_run.export_path, workspace / "old_export" / "given" / "1")
    (old / "assets" / "learned_from.txt").unlink()
    copy = workspace / "given_copy_old"
    shutil.copytree(workspace / "given", copy)
    result, said = _evaluate(workspace, old, copy, "old_copy", "--split", "validation")
    assert result["images_the_model_learned_from"] is None
    assert said == ["note: the export does not say which photos it learned from (an export of "
                    "an older version, its run's folder gone or moved), so whether these "
                    "figures are an estimate on new photos cannot be told"]


def test_an_experiment_refuses_refit_none_with_an_export_dir_before_any_run(workspace):
    code, out, err = run_cli(finetune_cli.main, _flags(
        workspace, "looks", "experiment_none", "--num_splits", "2", "--export_dir",
        str(workspace / "experiment_none_exports"), "--refit", "none"))
    assert code == 2 and err.strip().splitlines() == [
        "error: --refit none with --export_dir: an experiment exports one model, refit on every "
        "labelled photo (its runs are not exported); drop --refit none to export it, or "
        "--export_dir to export nothing"]
    assert not (workspace / "experiment_none" / "split_00").exists()


def test_a_tfrecord_datasets_test_split_is_never_trained_on_under_auto():
    """``datasets convert`` made it, not the run: like a ``test/`` folder it measures the
    export."""
    from runway_cnn.data.dataset import ImageDataset, Split
    from runway_cnn.training.refit import refit_splits

    split = Split(["a.jpg", "b.jpg"], np.zeros(2), ["a.jpg", "b.jpg"])
    records = ImageDataset("/records", ["a"], {"train": split, "validation": split,
                                               "test": split}, [],
                           split_settings={"tfrecords": "/records", "given_splits": []})
    assert refit_splits("auto", records) == (("train", "validation"), None)
    assert refit_splits("all", records)[1].startswith("--refit all: the export also learns")


def test_an_experiment_says_what_it_learns_from_and_names_its_figures_as_its_runs(workspace):
    """A K-fold over a dataset with a ``test/`` folder pools it (one line says so), ``--refit
    train_val`` does not keep it out of the export (one line), and on four classes the runs'
    lines, the summary files and the printed summary all call top-k ``top4``."""
    root = workspace / "kfold"
    code, out, err = run_cli(finetune_cli.main, _flags(
        workspace, "given", "kfold", "--kfold", "2", "--export_dir", str(workspace / "kfold_x"),
        "--refit", "train_val"))
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: the experiment pools the test split you gave with the other photos: its runs "
        "draw their own test splits from all of them (each trains on part of yours), and its "
        "export learns from every one",
        "note: --refit train_val: an experiment has no one validation or test split to keep "
        "out; its export learns from every labelled photo"]
    runs = [line for line in out.splitlines() if line.startswith("fold_")]
    assert len(runs) == 2 and all("top4 " in line and "top5" not in line for line in runs)
    summary = json.loads((root / "summary.json").read_text())
    assert "top4" in summary["figures"] and "top4" in summary["aggregate"]
    assert all("top4" in run for run in summary["runs"])
    assert "top5" not in json.dumps({k: summary[k] for k in ("figures", "aggregate", "runs")})
    assert "top4" in (root / "summary.csv").read_text().splitlines()[0].split(",")
    assert "  top4 " in out and summary["refit"]["notes"] == notes
    _, meta = read_assets(workspace / "kfold_x" / "given" / "1")
    assert meta["refit"]["notes"] == notes


def test_a_resumed_stage_gets_the_augmentation_of_the_epoch_it_resumes_at(tmp_path):
    """Epoch ``e`` of a stage's training images is the same whether the dataset starts at
    epoch 0 or, resumed, at ``e``."""
    from runway_cnn.data.pipeline import train_dataset
    from runway_cnn.data.preprocessing import Augmentation, PreprocessingSpec

    photos = make_image_folder(tmp_path / "photos", ("checks", "circles"), per_class=3)
    paths = sorted(str(p) for p in photos.rglob("*.jpg"))
    labels = np.arange(len(paths)) % 2

    def batches(**kwargs):
        ds = train_dataset(paths, labels, PreprocessingSpec(16), 6, Augmentation(), seed=3,
                           **kwargs)
        return [images for images, _ in ds.as_numpy_iterator()]

    whole, resumed = batches(sizes=[16, 16]), batches(sizes=[16], first_epoch=1)
    assert len(whole) == 2 and len(resumed) == 1
    np.testing.assert_array_equal(whole[1], resumed[0])
    assert not np.array_equal(whole[0], resumed[0])


def _dropout_model():
    import keras

    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dropout(0.5)(
        keras.layers.Dense(8)(inputs))))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", run_eagerly=True)
    return model


def test_a_stage_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Keras' backup keeps the weights and the optimizer; the dropout masks' generator state is
    kept too, so that the resumed epochs draw the masks the uninterrupted ones drew."""
    import keras

    from runway_cnn.train_dir import StageDir
    from runway_cnn.training.callbacks import ResumingBackup

    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = x[:, :3] * 2

    def fit(stage: str, callbacks=(), model=None):
        keras.utils.set_random_seed(1)
        model = model or _dropout_model()
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                  callbacks=[ResumingBackup(StageDir(tmp_path / stage)), *callbacks])
        return model

    class Killed(Exception):
        pass

    class KillAfterEpoch2(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Killed

    uninterrupted = fit("whole").get_weights()
    with pytest.raises(Killed):
        fit("killed", [KillAfterEpoch2()])
    keras.utils.set_random_seed(2)  # a new process: the generators start elsewhere
    resumed = fit("killed", model=_dropout_model()).get_weights()
    for a, b in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(a, b)
