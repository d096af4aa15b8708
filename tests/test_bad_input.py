"""Bad input never ends in a traceback or a wrong label: the corpus of ``bad_input_corpus`` through
the folder scan, ``finetune``, ``predict``, ``evaluate``, ``Predictor``, ``Client`` (against TF
Serving's recorded answers) and the raw signatures; then bad flags, damaged run files and broken
exports. Each case asserts its exact outcome, and no input file changes."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn import evaluate as evaluate_cli
from runway_cnn.export import __main__ as export_cli
from runway_cnn.export.reexport import reexport
from runway_cnn import finetune as finetune_cli
from runway_cnn import predict as predict_cli
from runway_cnn.data.folders import scan_image_folder
from runway_cnn.data.manifest import scan_labels_csv
from runway_cnn.errors import CheckpointError, DataError, RunwayError
from runway_cnn.inference.client import Client, ServingRequestError
from runway_cnn.inference.predictor import INVALID_IMAGE, Predictor, encode_images
from runway_cnn.tasks import SingleLabelTask
from bad_input_corpus import (BAD_CLASS, CASES, CLASSES, GOOD_PER_CLASS, NOT_UTF8, csv_photo_rows,
                              edit_descriptor, make_corpus, make_csv_photos, make_records,
                              skipped_names, snapshot, swap_labels, write_csv)
from conftest import make_image_folder
from helpers import (assert_one_line_error, decode_rest_instances, encode_rest_predictions,
                     free_ports, make_multilabel_folder, run_cli, run_signature,
                     write_attribute_photos)
from tiny_models import make_tiny_hub_module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus, a tiny backbone, the corpus's state before anything ran, and one finished
    run on it (both stages, so the training pipeline reads every usable file)."""
    root = tmp_path_factory.mktemp("bad_input")
    dataset = make_corpus(root)
    before = snapshot(root / "photos") | snapshot(root / "outside")
    hub = make_tiny_hub_module(root / "hub")
    run = fine_tune(FinetuneConfig(
        dataset_dir=str(dataset), train_dir=str(root / "run"), model_name=f"hub:{hub}",
        image_size=32, batch_size=8, stage2_epochs=1, validation_fraction=0.2,
        test_fraction=0.2, top_k=2, verbose=0))
    return {"root": root, "dataset": dataset, "hub": hub, "before": before, "run": run}


def _outcome_of_scan(report: dict, used: set[str], name: str) -> str:
    rel = f"{BAD_CLASS}/{name}"
    skipped = {d["path"]: d["reason"] for d in report["skipped"]}
    converted = {d["source"]: d["reason"] for d in report["converted"]}
    if rel in skipped:
        return f"skipped: {skipped[rel]}"
    if rel in converted:
        return f"converted: {converted[rel]}"
    return "used" if rel in used else "lost"


# --- the corpus through every entry point -------------------------------------------------------

def test_scan_gives_every_file_its_outcome(corpus):
    dataset = scan_image_folder(corpus["dataset"])
    report = dataset.report()
    used = {src for split in dataset.splits.values() for src in split.sources}
    for case in CASES:
        assert _outcome_of_scan(report, used, case.name).startswith(case.scan), case.name
    assert {d["path"] for d in report["skipped"]} == {f"{BAD_CLASS}/{n}" for n in skipped_names()}
    # nothing else is lost: every good image and every usable case is in a split
    usable = sum(not c.scan.startswith("skipped") for c in CASES)
    assert len(used) == GOOD_PER_CLASS * len(CLASSES) + usable
    labels = {src: dataset.labels[label] for split in dataset.splits.values()
              for src, label in zip(split.sources, split.targets)}
    assert all(labels[src] == src.split("/")[0] for src in labels)  # never another class's label


def test_finetune_trains_on_the_usable_files_and_reports_the_rest(corpus):
    run = corpus["run"]
    report = json.loads((run.train_dir / "data_report.json").read_text())
    assert {d["path"] for d in report["skipped"]} == {f"{BAD_CLASS}/{n}" for n in skipped_names()}
    assert run.metrics["stages"]["stage2"]["seconds"] > 0  # stage 2 read every training file
    splits = json.loads((run.train_dir / "splits.json").read_text())
    sources = {item["source"] for items in splits.values() for item in items}
    assert f"{BAD_CLASS}/{NOT_UTF8}" in sources
    assert (run.export_path / "saved_model.pb").exists()


def test_predict_cli_gives_a_row_per_image_file(corpus, tmp_path):
    output = tmp_path / "preds.csv"
    code, _, stderr = run_cli(predict_cli.main, ["--model", str(corpus["run"].train_dir),
                                                 str(corpus["dataset"] / BAD_CLASS),
                                                 "--output", str(output)])
    assert code == 0 and "Traceback" not in stderr
    with open(output, newline="", errors="surrogateescape") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    expected = {c.name: c.predict for c in CASES if c.predict != "absent"}
    good = {f"{BAD_CLASS}_{i:03d}.jpg" for i in range(GOOD_PER_CLASS)}
    assert set(rows) == set(expected) | good
    for name, outcome in expected.items():
        if outcome == "labels":
            assert rows[name]["label_1"] in CLASSES and not rows[name]["error"], name
        else:
            assert not rows[name]["label_1"] and rows[name]["error"].startswith(
                outcome.removeprefix("error: ")), (name, rows[name]["error"])


def test_predictor_answers_or_names_the_file(corpus):
    predictor = Predictor(corpus["run"].export_path)
    folder = corpus["dataset"] / BAD_CLASS
    for case in CASES:
        if case.predict == "absent":
            continue
        path = folder / case.name
        if case.predict == "labels":
            (result,) = predictor.predict(path)
            assert result["labels"][0] in CLASSES, case.name
        else:
            with pytest.raises(DataError) as error:
                predictor.predict(path)
            assert str(path) in str(error.value) and "\n" not in str(error.value), case.name


def test_client_gives_the_predictors_answers_from_tf_servings_bodies(corpus):
    """The REST body a Client sends for each corpus file, answered as TF Serving answers it
    (the signature run on the decoded instances), parsed by the Client: the Predictor's results,
    bad files marked; without per-image errors, TF Serving's HTTP 400 is a one-line error."""
    predictor = Predictor(corpus["run"].export_path)
    folder = corpus["dataset"] / BAD_CLASS
    cases = [c for c in CASES if c.predict in ("labels", "error: not an image",
                                               "error: cannot read") and c.name != "loop.jpg"]
    paths = [folder / c.name for c in cases]
    encoded, _ = encode_images(paths)
    body = json.loads(json.dumps(Client.rest_body(encoded, "serving_per_image")))
    outputs = run_signature(predictor.model, "serving_per_image",
                            decode_rest_instances(body, ["image_bytes"]))
    answer = encode_rest_predictions(outputs)
    results = predictor.task.decode(Client.parse_rest_response(200, answer), INVALID_IMAGE)
    local = predictor.predict(paths, per_image_errors=True)
    for case, got, want in zip(cases, results, local):
        assert ("error" in got) == (case.predict != "labels"), case.name
        assert got["labels"] == want["labels"], case.name
    bad = next(e for c, e in zip(cases, encoded) if c.predict != "labels")
    try:
        run_signature(predictor.model, "serving_default", {"image_bytes": [encoded[-1], bad]})
    except tf.errors.InvalidArgumentError as error:
        answer = json.dumps({"error": error.message})
    with pytest.raises(ServingRequestError, match="HTTP 400") as raised:
        Client.parse_rest_response(400, answer)
    assert "\n" not in str(raised.value)


def test_raw_signatures_mark_the_bytes_they_cannot_decode(corpus):
    loaded = Predictor(corpus["run"].export_path).model
    folder = corpus["dataset"] / BAD_CLASS
    cases = [c for c in CASES if c.raw_valid is not None]
    data = [(folder / c.name).read_bytes() for c in cases]
    out = loaded.signatures["serving_per_image"](image_bytes=tf.constant(data))
    assert out["valid"].numpy().tolist() == [c.raw_valid for c in cases]


def test_evaluate_cli_uses_what_the_scan_keeps(corpus, tmp_path):
    code, stdout, stderr = run_cli(evaluate_cli.main, [
        "--model", str(corpus["run"].export_path), "--dataset_dir", str(corpus["dataset"]),
        "--output_dir", str(tmp_path / "eval")])
    assert code == 0, stderr
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["skipped_files"] == len(skipped_names())
    usable = sum(not c.scan.startswith("skipped") for c in CASES)
    assert result["num_examples"] == GOOD_PER_CLASS * len(CLASSES) + usable
    with open(tmp_path / "eval" / "predictions.csv", newline="", errors="surrogateescape") as f:
        assert f"{BAD_CLASS}/{NOT_UTF8}" in {row["source"] for row in csv.DictReader(f)}


# --- the exported signatures and the Python API on odd requests ----------------------------------

def test_no_request_sends_an_empty_batch_to_the_model(corpus):
    """The tiny backbone fails on a 0-image batch (as TF's kernels do on some CPUs): an empty
    request, or one of bad images only, must still be answered."""
    loaded = Predictor(corpus["run"].export_path).model
    empty = tf.constant([], tf.string)
    for signature in ("serving_default", "serving_per_image", "embed"):
        out = loaded.signatures[signature](image_bytes=empty)
        assert all(v.shape[0] == 0 for v in out.values()), signature
    nothing = loaded.signatures["serving_per_image"](image_bytes=tf.constant([b"", b"text"]))
    assert nothing["valid"].numpy().tolist() == [False, False]
    assert not nothing["probabilities"].numpy().any()
    out = loaded.signatures["predict_images"](images=tf.zeros([0, 32, 32, 3]))
    assert out["probabilities"].shape == (0, len(CLASSES))


def test_predictor_refuses_what_it_cannot_read_correctly(corpus):
    predictor = Predictor(corpus["run"].export_path)
    photo = np.asarray(predictor.crop(np.full((40, 48, 3), 128, np.uint8)))
    cases = {
        "0..255 floats": (lambda: predictor.predict(photo * 255.0),
                          r"values in \[128, 128\]; give float in \[0, 1\]"),
        "NaN": (lambda: predictor.predict(np.full((40, 48, 3), np.nan, np.float32)), "NaN"),
        "bad bytes": (lambda: predictor.predict(b"not a photo"), "image #0"),
        "bad bytes, per-image errors": (lambda: predictor.predict([b""], per_image_errors=True),
                                        None),
        "embed of bad bytes": (lambda: predictor.embed([b"not a photo"]), "image #0"),
        "no images": (lambda: predictor.predict([]), "no images given"),
        "wrong crop size": (lambda: predictor.probabilities(np.zeros((1, 40, 40, 3), "float32")),
                            r"\[n, 32, 32, 3\]"),
        "crops in 0..255": (lambda: predictor.probabilities(photo[None] * 255.0), "give float"),
    }
    for name, (call, message) in cases.items():
        if message is None:
            assert call() == [{"labels": [], "scores": [], "error": INVALID_IMAGE}], name
            continue
        with pytest.raises(DataError, match=message):
            call()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be \[n, 32, 32, 3\]"):
        predictor.model.signatures["predict_images"](images=tf.zeros([1, 40, 40, 3]))
    assert predictor.predict(photo)[0]["labels"][0] in CLASSES  # floats in [0, 1] are fine


# --- folders, flags and files that are wrong as a whole ------------------------------------------

def _small_config(corpus, tmp_path, dataset, **overrides) -> list[str]:
    argv = ["--dataset_dir", str(dataset), "--train_dir", str(tmp_path / "train"),
            "--model_name", f"hub:{corpus['hub']}", "--image_size", "32", "--batch_size", "8",
            "--verbose", "0", "--validation_fraction", "0.25", "--test_fraction", "0.25"]
    for flag, value in overrides.items():
        argv += [f"--{flag}", str(value)]
    return argv


def test_bad_folders_and_flags_are_one_line_errors_before_any_training(corpus, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    empty_class = make_image_folder(tmp_path / "empty_class", per_class=4, size=(16, 24))
    (empty_class / "zebra").mkdir()
    lonely = make_image_folder(tmp_path / "lonely", per_class=4, size=(16, 24))
    make_image_folder(lonely, classes=["zebra"], per_class=1, size=(16, 24))
    plain_module = tmp_path / "plain_module"
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(plain_module))
    nan_hub = make_tiny_hub_module(tmp_path / "nan_hub", nan=True)
    good = corpus["dataset"]
    cases = [  # (argv overrides or dataset, texts the one line must name)
        (dict(train_dir=a_file), ["--train_dir", str(a_file)]),
        (dict(export_dir=a_file), ["--export_dir", str(a_file)]),
        (dict(train_dir=a_file / "run"), ["--train_dir", str(a_file)]),
        (dict(unfreeze="blok6", stage2_epochs=1), ["--unfreeze", "blok6"]),
        (dict(model_name=f"hub:{plain_module}"), [str(plain_module), "not callable"]),
        (dict(model_name=f"hub:{nan_hub}"), ["NaN"]),
        (dict(batch_size=0), ["--batch_size"]),
    ]
    for overrides, named in cases:
        argv = _small_config(corpus, tmp_path, good, **overrides)
        code, _, stderr = run_cli(finetune_cli.main, argv)
        assert_one_line_error(code, stderr, *named)
        assert not (tmp_path / "train" / "stage1").exists(), overrides  # refused up front
    for dataset, named in ((empty_class, [str(empty_class / "zebra"), "empty"]),
                           (lonely, [str(lonely / "zebra"), "1 usable image"])):
        code, _, stderr = run_cli(finetune_cli.main, _small_config(corpus, tmp_path, dataset))
        assert_one_line_error(code, stderr, *named)
    model = str(corpus["run"].export_path)
    for main, argv, named in (
            (predict_cli.main, ["--model", model, str(good), "--output", str(tmp_path)],
             ["--output", "folder"]),
            (predict_cli.main, ["--model", model, str(good), "--batch_size", "0"],
             ["--batch_size 0"]),
            (evaluate_cli.main, ["--model", model, "--dataset_dir", str(good), "--output_dir",
                                 str(a_file)], ["--output_dir", str(a_file)]),
            (evaluate_cli.main, ["--model", model, "--dataset_dir", str(good), "--batch_size",
                                 "0"], ["--batch_size 0"]),
            (export_cli.main, ["--train_dir", str(corpus["run"].train_dir), "--export_dir",
                               str(a_file)], ["--export_dir", str(a_file)])):
        assert_one_line_error(*run_cli(main, argv)[::2], *named)


def test_evaluate_needs_no_split_of_a_one_image_class(corpus, tmp_path):
    folder = make_image_folder(tmp_path / "eval", CLASSES, per_class=1, size=(40, 48))
    code, stdout, stderr = run_cli(evaluate_cli.main, [
        "--model", str(corpus["run"].export_path), "--dataset_dir", str(folder)])
    assert code == 0, stderr
    assert "(3 images)" in stdout


def test_damaged_run_files_and_exports_are_one_line_errors(corpus, tmp_path):
    train_dir = tmp_path / "run"
    shutil.copytree(corpus["run"].train_dir, train_dir, symlinks=True)
    export = train_dir / "export" / "photos" / "1"
    metrics = json.loads((train_dir / "metrics.json").read_text())
    (train_dir / "metrics.json").write_text(json.dumps({**metrics,
                                                        "export_path": str(export)})[:40])
    image = str(corpus["dataset"] / "circles" / "circles_000.jpg")
    code, _, stderr = run_cli(predict_cli.main, ["--model", str(train_dir), image])
    assert_one_line_error(code, stderr, str(train_dir / "metrics.json"), "damaged")
    (train_dir / "metrics.json").unlink()  # as the message says; now a damaged stage marker:
    (train_dir / "stage1" / "done.json").write_text("{\"seconds\": 1")
    argv = _small_config(corpus, tmp_path, corpus["dataset"])
    argv[argv.index("--train_dir") + 1] = str(train_dir)
    code, _, stderr = run_cli(finetune_cli.main, argv + ["--stage2_epochs", "1",
                                                         "--validation_fraction", "0.2",
                                                         "--test_fraction", "0.2", "--top_k",
                                                         "2"])
    assert_one_line_error(code, stderr, str(train_dir / "stage1" / "done.json"), "delete it")
    for damage, named in (("no variables", "variables/ is missing"),
                          ("truncated saved_model.pb", "cannot load it")):
        broken = tmp_path / damage.replace(" ", "_")
        shutil.copytree(export, broken)
        if damage == "no variables":
            shutil.rmtree(broken / "variables")
        else:
            data = (broken / "saved_model.pb").read_bytes()
            (broken / "saved_model.pb").write_bytes(data[:len(data) // 2])
        with pytest.raises(CheckpointError, match=named):
            Predictor(broken)
        code, _, stderr = run_cli(predict_cli.main, ["--model", str(broken), image])
        assert_one_line_error(code, stderr, str(broken), named)


def test_a_config_json_edited_to_bad_settings_is_named_by_export(corpus, tmp_path):
    train_dir = tmp_path / "run"
    shutil.copytree(corpus["run"].train_dir, train_dir, symlinks=True)
    config = json.loads((train_dir / "config.json").read_text())
    for key, value, named in (("image_size", -5, "image_size -5"),
                              ("image_size", "big", "image_size 'big'"),
                              ("pooling", "mean", "pooling 'mean'")):
        (train_dir / "config.json").write_text(json.dumps({**config, key: value}))
        code, _, stderr = run_cli(export_cli.main, ["--train_dir", str(train_dir)])
        assert_one_line_error(code, stderr, str(train_dir / "config.json"), named)


def test_wrong_types_in_the_python_api_name_the_setting_before_any_work(tmp_path):
    settings = dict(dataset_dir=str(tmp_path / "photos"), train_dir=str(tmp_path / "run"))
    for name, value, expected in (("time_budget", "abc", "a number or None"),
                                  ("batch_size", "8", "a whole number"),
                                  ("group_by", 123, "a string or None"),
                                  ("seed", 1.5, "a whole number"),
                                  ("image_size", 64.7, "a whole number or None"),
                                  ("augment", "no", "True or False"),
                                  ("pooling", "mean", "one of avg, max")):
        with pytest.raises(RunwayError) as refused:
            fine_tune(**settings, **{name: value})
        assert f"--{name} {value!r}: must be {expected}" == str(refused.value)
    assert not (tmp_path / "run").exists()
    config = FinetuneConfig(**{**settings, "train_dir": tmp_path / "run"},
                            batch_size=np.int64(8), learning_rate=np.float32(0.5), unfreeze=20)
    assert (type(config.batch_size), type(config.learning_rate)) == (int, float)
    assert config.train_dir == str(tmp_path / "run")  # numpy numbers and paths: plain types
    assert config.unfreeze == "20"  # a number of layers, as the flag's text


def test_a_damaged_backup_is_set_aside_and_the_stage_restarts(corpus, tmp_path):
    train_dir = tmp_path / "run"
    backup = train_dir / "stage1" / "backup"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # truncated
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    config = FinetuneConfig(
        dataset_dir=str(corpus["dataset"]), train_dir=str(train_dir),
        model_name=f"hub:{corpus['hub']}", image_size=32, batch_size=8, stage1_solver="adam",
        stage1_epochs=4, stage2_epochs=0, validation_fraction=0.2, test_fraction=0.2,
        verbose=0)
    (train_dir / "config.json").write_text(json.dumps(config.to_dict()))  # the killed run's
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = fine_tune(config)
    assert f"{backup} is damaged" in printed.getvalue()
    assert "stage1 restarts from its start" in printed.getvalue()
    assert len(list((train_dir / "stage1").glob("backup.damaged-*"))) == 1
    with open(train_dir / "stage1" / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2", "3"]
    assert result.export_path is not None


def test_resumed_stage_says_so_and_counts_every_process(corpus, tmp_path, monkeypatch):
    config = FinetuneConfig(
        dataset_dir=str(corpus["dataset"]), train_dir=str(tmp_path / "run"),
        model_name=f"hub:{corpus['hub']}", image_size=32, batch_size=8, stage1_solver="adam",
        stage1_epochs=4, stage2_epochs=0, validation_fraction=0.2, test_fraction=0.2,
        verbose=0)
    from runway_cnn.training import trainer

    class Interrupt(Exception):
        pass

    class StopAtEpoch2(trainer.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise Interrupt

    callbacks = trainer.stage_callbacks
    monkeypatch.setattr(trainer, "stage_callbacks", lambda *a: callbacks(*a) + [StopAtEpoch2()])
    with pytest.raises(Interrupt):
        fine_tune(config)
    monkeypatch.setattr(trainer, "stage_callbacks", callbacks)
    first = json.loads((tmp_path / "run" / "stage1" / "seconds.json").read_text())["seconds"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = fine_tune(config)
    assert "resuming stage1 at epoch 3" in printed.getvalue()
    assert result.metrics["stages"]["stage1"]["seconds"] > first > 0


def test_relative_paths_work_from_any_directory(corpus, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    data = Path(os.path.relpath(corpus["dataset"]))
    run = fine_tune(FinetuneConfig(dataset_dir=str(data), train_dir="runs/rel",
                                   model_name=f"hub:{os.path.relpath(corpus['hub'])}", image_size=32,
                                   stage2_epochs=0, validation_fraction=0.2, test_fraction=0.2,
                                   verbose=0))
    assert run.export_path == tmp_path / "a" / "runs" / "rel" / "export" / "photos" / "1"
    monkeypatch.chdir(tmp_path / "b")
    again = reexport(tmp_path / "a" / "runs" / "rel")
    assert again.export_path == run.export_path.parent / "2"
    from runway_cnn.training.restore import restore_run, run_split
    assert len(run_split(restore_run(tmp_path / "a" / "runs" / "rel").train_dir, "validation"))


def test_rerunning_a_finished_command_adds_no_export(corpus, tmp_path):
    config = dict(dataset_dir=str(corpus["dataset"]), train_dir=str(tmp_path / "run"),
                  model_name=f"hub:{corpus['hub']}", image_size=32, stage2_epochs=0,
                  validation_fraction=0.2, test_fraction=0.2, verbose=0)
    first = fine_tune(**config)
    model_dir = first.export_path.parent
    abandoned = model_dir / f".tmp-export-{2 ** 22 + 1}-x"  # no such process
    in_progress = model_dir / f".tmp-export-{os.getpid()}-y"
    abandoned.mkdir()
    in_progress.mkdir()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        again = fine_tune(**config)
    assert "holds this run, finished" in printed.getvalue()
    assert again.export_path == first.export_path
    assert again.metrics == first.metrics
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == ["1"]
    second = fine_tune(**{**config, "top_k": 2})  # another top_k asks for a new export
    assert second.export_path == model_dir / "2"
    assert not abandoned.exists() and in_progress.exists()


def test_a_damaged_feature_cache_is_recomputed(tmp_path, capsys):
    from runway_cnn.backbones import features

    from runway_cnn.train_dir import TrainDir

    files = TrainDir(tmp_path)
    np.save(files.feature_array, np.zeros((2, 4), np.float32))
    files.features.write_bytes(b"PK\x03\x04 cut short by a kill")
    assert features.load_features(files, None, None, "avg") == (None, 0.0)
    assert f"{files.features} is damaged" in capsys.readouterr().out
    files.feature_array.write_bytes(b"\x93NUMPY cut short")  # the array itself damaged
    assert features.load_features(files, None, None, "avg") == (None, 0.0)
    assert "is damaged" in capsys.readouterr().out


def test_diverged_training_is_a_one_line_error(corpus, tmp_path, monkeypatch):
    from runway_cnn.training.trainer import FineTuner

    tuner = FineTuner(FinetuneConfig(
        dataset_dir=str(corpus["dataset"]), train_dir=str(tmp_path / "run"),
        model_name=f"hub:{corpus['hub']}", image_size=32, validation_fraction=0.2,
        test_fraction=0.2, verbose=0))
    monkeypatch.setattr(tuner, "predict_probabilities",
                        lambda split: np.full((len(split), 3), np.nan))
    with pytest.raises(RunwayError, match="NaN: training diverged.*lower --learning_rate"):
        tuner.evaluate("validation")


# --- CSV manifests (round 3) ---

@pytest.fixture(scope="module")
def csv_model(tmp_path_factory):
    """Photos for manifests, a tiny backbone, and a multi-label run (stage 1 only) trained on
    their ``red`` / ``blue`` tags, with the photos' state before anything ran."""
    root = tmp_path_factory.mktemp("csv_round3")
    photos = make_csv_photos(root)
    before = snapshot(photos)
    tags = write_csv(root / "tags.csv", ["filename", "labels"], csv_photo_rows())
    hub = make_tiny_hub_module(root / "hub")
    run = fine_tune(FinetuneConfig(
        dataset_dir=str(photos), labels_csv=str(tags), task="multi_label",
        train_dir=str(root / "run"), model_name=f"hub:{hub}", image_size=32, batch_size=8,
        stage2_epochs=0, validation_fraction=0.25, test_fraction=0.25, verbose=0))
    return {"root": root, "photos": photos, "before": before, "run": run}


def _csv_argv(photos: Path, labels_csv: Path, train_dir: Path, task: str = "single_label"
              ) -> list[str]:
    return ["--dataset_dir", str(photos), "--labels_csv", str(labels_csv), "--task", task,
            "--train_dir", str(train_dir), "--verbose", "0"]


def test_csv_rows_naming_one_file_are_duplicates_however_spelled(tmp_path):
    photos = make_csv_photos(tmp_path)
    (photos / "alias.jpg").symlink_to("red/red_000.jpg")
    rows = csv_photo_rows()  # lines 2-13
    rows += [["red/../red/red_000.jpg", "blue"], ["alias.jpg", "blue"],
             ["./red/red_001.jpg", "blue"], ["red//red_002.jpg", "blue"]]
    manifest = scan_labels_csv(photos, write_csv(tmp_path / "labels.csv", ["filename", "label"],
                                                 rows), SingleLabelTask.raw_label)
    assert {r["line"]: r["reason"] for r in manifest.bad_rows} == {
        14: "duplicate of line 2", 15: "duplicate of line 2", 16: "duplicate of line 3",
        17: "duplicate of line 4"}
    # every photo once, with its own folder's label: none is trained as blue and tested as red
    assert sorted(zip(manifest.sources, manifest.raw_labels)) == sorted(map(tuple, rows[:12]))


def test_csv_header_naming_a_column_twice_is_a_one_line_error(tmp_path):
    photos = make_csv_photos(tmp_path)
    for header in (["filename", "label", "label"], ["filename", "label", "Label"],
                   ["filename", "label", " label"], ["filename", "FileName", "label"]):
        labels_csv = write_csv(tmp_path / "labels.csv", header,
                               [row + ["blue"] for row in csv_photo_rows()])
        with pytest.raises(DataError, match="twice") as error:
            scan_labels_csv(photos, labels_csv, SingleLabelTask.raw_label)
        assert str(labels_csv) in str(error.value), header
        code, _, stderr = run_cli(finetune_cli.main, _csv_argv(photos, labels_csv,
                                                               tmp_path / "train"))
        assert_one_line_error(code, stderr, str(labels_csv), "twice", repr(header[2]))
        assert not (tmp_path / "train" / "splits.json").exists()


def test_labels_with_control_characters_are_refused_by_every_task(tmp_path):
    from runway_cnn.tasks import AttributeTask, MultiLabelTask
    from runway_cnn.training.datasets import read_labels_file

    photos = make_csv_photos(tmp_path)
    good = csv_photo_rows()
    cases = (  # task, header, the bad row's cells, the character named
        (SingleLabelTask, ["filename", "label"], ["dark\nred"], "U+000A"),
        (MultiLabelTask, ["filename", "labels"], ["red;dark\nred"], "U+000A"),
        (AttributeTask, ["filename", "colour"], ["dark\tred"], "U+0009"),
        (AttributeTask, ["filename", "colour", "pattern"], ["dark\tred", "plain"], "U+0009"))
    for task, header, cells, char in cases:
        rows = [[name, label] + ["plain"] * (len(header) - 2) for name, label in good]
        rows[0] = [rows[0][0], *cells]
        labels_csv = write_csv(tmp_path / "labels.csv", header, rows)
        manifest = scan_labels_csv(photos, labels_csv, task.raw_label)
        bad = {r["line"]: r["reason"] for r in manifest.bad_rows}
        assert list(bad) == [2] and char in bad[2] and "\n" not in bad[2], (task.name, bad)
    labels_csv = write_csv(tmp_path / "labels.csv", ["filename", "colour", "pat\x1btern"],
                           [[name, label, "plain"] for name, label in good])
    with pytest.raises(DataError, match=r"U\+001B") as error:  # a column name: no row usable
        scan_labels_csv(photos, labels_csv, AttributeTask.raw_label)
    assert str(labels_csv) in str(error.value)
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("red\nnavy\tblue\n")
    with pytest.raises(DataError, match="U\\+0009") as error:
        read_labels_file(vocabulary)
    assert str(vocabulary) in str(error.value)
    folders = make_image_folder(tmp_path / "folders", ("red", "dark\nred"), per_class=3,
                                size=(36, 44))
    with pytest.raises(DataError, match="U\\+000A") as error:
        scan_image_folder(folders)
    assert "\n" not in str(error.value)


def test_evaluate_counts_labels_the_model_does_not_know(csv_model, tmp_path):
    eval_csv = write_csv(tmp_path / "eval.csv", ["filename", "labels"], [
        ["red/red_000.jpg", "red;glitter"], ["red/red_001.jpg", "glitter;neon"],
        ["red/red_002.jpg", ""], ["blue/blue_000.jpg", "blue"], ["blue/blue_001.jpg", "neon"]])
    code, stdout, stderr = run_cli(evaluate_cli.main, [
        "--model", str(csv_model["run"].export_path), "--dataset_dir", str(csv_model["photos"]),
        "--labels_csv", str(eval_csv), "--output_dir", str(tmp_path / "eval")])
    assert code == 0, stderr
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["unknown_labels"] == {"glitter": 2, "neon": 2}
    assert result["unknown_label_count"] == 4
    assert result["images_left_without_labels"] == 2  # red_001 and blue_001; red_002 had none
    assert "4 label(s) the model does not know (glitter: 2, neon: 2)" in stdout
    assert "2 image(s) left with no label" in stdout
    assert snapshot(csv_model["photos"]) == csv_model["before"]


def test_csv_without_usable_rows_names_the_column_and_writes_the_report(tmp_path):
    photos = make_csv_photos(tmp_path)
    names = [name for name, _ in csv_photo_rows()]
    cases = (  # name, task, header, cells of each row, texts the one line must name
        ("empty labels", "single_label", ["filename", "label"], [""], ["no 'label' value"]),
        ("label with a space", "single_label", ["filename", "label "], ["red"],
         ["no 'label' column", "'label '", "rename its column 'label ' to 'label'"]),
        ("multi-label csv", "single_label", ["filename", "labels"], ["red;blue"],
         ["no 'label' column", "--task single_label", "'labels'"]),
        ("attributes csv", "multi_label", ["filename", "colour", "pattern"], ["red", "plain"],
         ["no 'labels' column", "--task multi_label", "'colour'", "'pattern'"]))
    for name, task, header, cells, named in cases:
        labels_csv = write_csv(tmp_path / f"{name}.csv", header, [[n, *cells] for n in names])
        train_dir = tmp_path / name
        code, _, stderr = run_cli(finetune_cli.main, _csv_argv(photos, labels_csv, train_dir,
                                                               task))
        assert_one_line_error(code, stderr, str(labels_csv), *named)
        if name == "empty labels":  # no usable row: the report the message names is written
            report_path = train_dir / "data_report.json"
            assert f"each is listed in {report_path}" in stderr
    report = json.loads(report_path.read_text())
    assert report["bad_rows"] == len(names)
    assert [d["path"] for d in report["skipped"]] == [
        f"empty labels.csv:{line}" for line in range(2, len(names) + 2)]
    assert all(d["reason"].endswith("label: no 'label' value") for d in report["skipped"])


def test_a_file_name_too_long_is_one_bad_row_and_error_lines_are_cut(tmp_path):
    from runway_cnn.training.datasets import load_dataset

    photos = make_csv_photos(tmp_path)
    rows = csv_photo_rows() + [["x" * 100_000 + ".jpg", "red"]]
    labels_csv = write_csv(tmp_path / "labels.csv", ["filename", "label"], rows)
    dataset, _ = load_dataset(FinetuneConfig(
        dataset_dir=str(photos), labels_csv=str(labels_csv), train_dir=str(tmp_path / "run"),
        validation_fraction=0.25, test_fraction=0.25), tmp_path / "run")
    assert sum(len(split) for split in dataset.splits.values()) == len(rows) - 1
    (bad,) = dataset.report()["skipped"]
    assert bad["path"] == f"labels.csv:{len(rows) + 1}"
    assert "File name too long" in bad["reason"] and len(bad["reason"]) < 500
    for message in ("x" * 100_000, "a\nb"):
        def fail(argv, message=message):
            raise DataError(message)
        code, _, stderr = run_cli(fail, [])
        assert_one_line_error(code, stderr)
        assert len(stderr.strip()) <= 500
    assert stderr.strip() == "error: a b"


def test_a_train_dir_inside_the_dataset_is_refused_up_front(tmp_path, monkeypatch):
    photos = make_csv_photos(tmp_path)
    before = snapshot(photos)
    for train_dir in (photos / "runs" / "x", photos, photos / "red"):
        code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", str(photos),
                                                      "--train_dir", str(train_dir)])
        assert_one_line_error(code, stderr, f"--train_dir {train_dir}",
                              f"--dataset_dir {photos}")
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", str(photos), "--train_dir",
                                                  str(tmp_path / "run"), "--export_dir",
                                                  str(photos / "exports")])
    assert_one_line_error(code, stderr, f"--export_dir {photos / 'exports'}")
    monkeypatch.chdir(photos)  # cd photos && finetune --dataset_dir .: the default runs/photos
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", "."])
    assert_one_line_error(code, stderr, f"--train_dir {photos / 'runs' / 'photos'}",
                          "--dataset_dir", "without --train_dir")
    assert snapshot(photos) == before  # nothing written into the photo folder


def test_a_train_dir_of_the_users_files_is_refused_unless_overwrite(corpus, tmp_path):
    """Files no run wrote (no run's config.json) are never overwritten nor taken for a run's
    own; ``--overwrite`` writes into the folder anyway, and a run's own folder is reused."""
    from runway_cnn.training.trainer import FineTuner

    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("splits.json", "data_report.json", "notes.txt", "model.weights.h5"):
        (mine / name).write_text(f"my own {name}")
    before = snapshot(mine)
    argv = _small_config(corpus, tmp_path, corpus["dataset"], train_dir=mine)
    code, _, stderr = run_cli(finetune_cli.main, argv)
    assert_one_line_error(code, stderr, f"--train_dir {mine}", "data_report.json",
                          "--overwrite")
    settings = dict(dataset_dir=str(corpus["dataset"]), train_dir=str(mine),
                    model_name=f"hub:{corpus['hub']}", image_size=32, validation_fraction=0.2,
                    test_fraction=0.2, verbose=0)
    with pytest.raises(RunwayError, match="--train_dir .*notes.txt.*--overwrite"):
        fine_tune(**settings)
    assert snapshot(mine) == before  # nothing written over, nothing written beside
    FineTuner(FinetuneConfig(**settings, overwrite=True))
    assert (mine / "notes.txt").read_text() == "my own notes.txt"
    FineTuner(FinetuneConfig(**settings))  # now the run's own folder (its config.json)


def test_another_workers_folder_in_a_new_train_dir_is_not_the_users(corpus, tmp_path):
    """A worker's temporary folder may appear in the chief's new train dir before the chief
    checks it (they start together): it is the run's, not a user's file."""
    from runway_cnn.training.resume import check_resume

    train_dir = tmp_path / "two_workers"
    (train_dir / "workertemp_1").mkdir(parents=True)
    config = FinetuneConfig(dataset_dir=str(corpus["dataset"]), train_dir=str(train_dir))
    check_resume(train_dir, config)
    assert (train_dir / "config.json").exists()
    (train_dir / "config.json").unlink()
    (train_dir / "notes.txt").write_text("mine")
    with pytest.raises(RunwayError, match=r"\(notes.txt\); give a new"):
        check_resume(train_dir, config)


def test_predict_and_evaluate_refuse_a_folder_of_the_users_files(corpus, tmp_path):
    from runway_cnn.inference.evaluation import evaluate_model
    from runway_cnn.inference.batch import predict

    model, good = str(corpus["run"].export_path), str(corpus["dataset"])
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("eval.json", "look.png", "overlays.csv", "predictions.csv"):
        (mine / name).write_text(f"my own {name}")
    before = snapshot(mine)
    code, _, stderr = run_cli(predict_cli.main, ["--model", model, good, "--explain", str(mine)])
    assert_one_line_error(code, stderr, f"--explain {mine}", "overlays.csv", "--overwrite")
    evaluate = ["--model", model, "--dataset_dir", good, "--output_dir", str(mine)]
    code, _, stderr = run_cli(evaluate_cli.main, evaluate)
    assert_one_line_error(code, stderr, f"--output_dir {mine}", "eval.json", "--overwrite")
    with pytest.raises(RunwayError, match="--explain .*--overwrite"):
        predict(model, [good], explain_dir=mine)
    with pytest.raises(RunwayError, match="--output_dir .*--overwrite"):
        evaluate_model(model, good, output_dir=mine)
    assert snapshot(mine) == before
    for argv in (evaluate + ["--overwrite"], evaluate):  # then the folder holds its evaluation
        code, _, stderr = run_cli(evaluate_cli.main, argv)
        assert code == 0, stderr
    assert json.loads((mine / "eval.json").read_text())["model"] == model
    assert (mine / "look.png").read_text() == "my own look.png"
# --- TFRecord folders and task options (round 3) ---

def test_a_reordered_label_list_in_dataset_json_is_refused(corpus, tmp_path):
    """Swapping two labels of dataset.json would train (and export) red photos as 'blue': the
    records' own label text must disagree with it before anything trains or evaluates."""

    from runway_cnn.training.datasets import load_dataset

    records = make_records(tmp_path / "single")
    descriptor = edit_descriptor(records, lambda d: swap_labels(d, 0, 2))  # checks ↔ stripes
    code, _, stderr = run_cli(finetune_cli.main, _small_config(corpus, tmp_path, records))
    assert_one_line_error(code, stderr, str(descriptor), ".tfrecord#", "reordered")
    assert not (tmp_path / "train" / "stage1").exists()
    code, _, stderr = run_cli(evaluate_cli.main, ["--model", str(corpus["run"].export_path),
                                                  "--dataset_dir", str(records),
                                                  "--output_dir", str(tmp_path / "eval")])
    assert_one_line_error(code, stderr, str(descriptor), ".tfrecord#")
    assert not (tmp_path / "eval").exists()
    photos, labels_csv = make_multilabel_folder(tmp_path / "ml", per_kind=4)
    multi = make_records(tmp_path / "ml", dataset_dir=str(photos), labels_csv=str(labels_csv),
                         task="multi_label")
    photos, labels_csv = write_attribute_photos(tmp_path / "attr", per_kind=5)
    attributes = make_records(tmp_path / "attr", dataset_dir=str(photos),
                              labels_csv=str(labels_csv), task="attributes")
    for records, task in ((multi, "multi_label"), (attributes, "attributes")):
        labels = json.loads((records / "dataset.json").read_text())["labels"]
        config = FinetuneConfig(dataset_dir=str(records), task=task,
                                train_dir=str(tmp_path / task))
        assert load_dataset(config, None)[1].labels == labels  # as converted: fine
        edit_descriptor(records, swap_labels)  # e.g. pattern=checks ↔ pattern=disc
        with pytest.raises(DataError, match="reordered") as error:
            load_dataset(config, None)
        assert str(records / "dataset.json") in str(error.value), task
        assert "\n" not in str(error.value)


def test_convert_checks_its_output_folder_before_scanning(tmp_path, monkeypatch):
    from runway_cnn import datasets as datasets_cli
    from runway_cnn.training import datasets as training_datasets

    photos = make_image_folder(tmp_path / "photos", CLASSES, per_class=4, size=(24, 32))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    scans = []
    real = training_datasets.load_dataset
    monkeypatch.setattr(training_datasets, "load_dataset",
                        lambda *args: scans.append(args) or real(*args))
    for output, more, named in ((a_file, [], ["--output_dir", str(a_file), "file"]),
                                (a_file / "records", [], ["--output_dir", str(a_file)]),
                                (full, [], ["--output_dir", str(full), "not empty"]),
                                (tmp_path / "new", ["--num_shards", "0"], ["--num_shards"])):
        code, _, stderr = run_cli(datasets_cli.main, ["convert", "--dataset_dir", str(photos),
                                                      "--output_dir", str(output), *more])
        assert_one_line_error(code, stderr, *named)
        assert not scans, output  # refused before the scan
    assert a_file.read_text() == "not a folder" and (full / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "new").exists()


def test_a_records_folder_without_its_descriptor_keys_is_named(corpus, tmp_path):
    records = make_records(tmp_path)
    saved = (records / "dataset.json").read_text()
    model = ["--model", str(corpus["run"].export_path), "--output_dir", str(tmp_path / "eval")]
    for change, key in ((lambda d: d.pop("target"), "'target'"),
                        (lambda d: d["splits"]["train"].pop("shards"), "'shards'")):
        descriptor = edit_descriptor(records, change)
        code, _, stderr = run_cli(finetune_cli.main, _small_config(corpus, tmp_path, records))
        assert_one_line_error(code, stderr, str(descriptor), key)
        code, _, stderr = run_cli(evaluate_cli.main, [*model, "--dataset_dir", str(records)])
        assert_one_line_error(code, stderr, str(descriptor), key)
        descriptor.write_text(saved)
    (records / "dataset.json").unlink()
    for main, argv in ((finetune_cli.main, _small_config(corpus, tmp_path, records)),
                       (evaluate_cli.main, [*model, "--dataset_dir", str(records)])):
        code, _, stderr = run_cli(main, argv)
        assert_one_line_error(code, stderr, str(records), "dataset.json", ".tfrecord")
        assert "class folder" not in stderr
    assert not (tmp_path / "train" / "stage1").exists() and not (tmp_path / "eval").exists()


def test_bad_label_vectors_and_attribute_weights_are_named_before_training(corpus, tmp_path):

    photos, labels_csv = make_multilabel_folder(tmp_path / "ml", per_kind=4)
    labels = ["checks", "dark", "disc", "hstripes", "striped", "vstripes"]
    ragged = tmp_path / "vectors.txt"
    ragged.write_text("".join(f"{w} 0.1 0.2 0.3\n" for w in labels[:3])
                      + "hstripes 0.1 0.2\n"  # line 4: one value short
                      + "".join(f"{w} 0.1 0.2 0.3\n" for w in labels[4:]))
    nan_text = tmp_path / "nan_vectors.txt"
    nan_text.write_text("".join(f"{w} {'nan' if w == 'disc' else '0.5'} 0.2\n" for w in labels))
    nan_rows = tmp_path / "vectors.npy"
    vectors = np.ones((len(labels), 4), np.float32)
    vectors[2, 1] = np.nan  # row 2: disc
    np.save(nan_rows, vectors)
    before = {p: p.read_bytes() for p in (ragged, nan_text, nan_rows)}
    multi = ["--labels_csv", str(labels_csv), "--task", "multi_label", "--head", "mlgcn"]
    for path, named in ((ragged, ["line 4", "3 values"]), (nan_text, ["line 3", "not finite"]),
                        (nan_rows, ["row 2", "disc", "not finite"])):
        argv = _small_config(corpus, tmp_path, photos) + multi + ["--label_embeddings", str(path)]
        code, _, stderr = run_cli(finetune_cli.main, argv)
        assert_one_line_error(code, stderr, f"--label_embeddings {path}", *named)
        assert not (tmp_path / "train" / "stage1").exists(), path
    assert {p: p.read_bytes() for p in before} == before
    photos, labels_csv = write_attribute_photos(tmp_path / "attr", per_kind=5)
    for weights in ("tone=inf", "sleeve=nan", "pattern=1e999"):
        argv = _small_config(corpus, tmp_path, photos) + [
            "--labels_csv", str(labels_csv), "--task", "attributes",
            "--attribute_weights", f"tone=2,{weights}" if weights[:4] != "tone" else weights]
        code, _, stderr = run_cli(finetune_cli.main, argv)
        assert_one_line_error(code, stderr, f"--attribute_weights {weights}")
        assert not (tmp_path / "train" / "stage1").exists(), weights
# --- indexes, distribution and the web page (round 3) --------------------------------------------

def _index_command(tool: str, model, images, output, *extra: str) -> tuple[int, str, str]:
    """``python -m runway_cnn.index build`` (``tool`` "index") or ``recommend build``."""
    from runway_cnn import index as index_cli
    from runway_cnn import recommend as recommend_cli

    if tool == "index":
        return run_cli(index_cli.main, ["build", "--model", str(model), "--images", str(images),
                                        "--output", str(output), *extra])
    return run_cli(recommend_cli.main, ["build", "--model", str(model), "--catalog", str(images),
                                        "--output", str(output), "--epochs", "3", *extra])


@pytest.fixture(scope="module")
def small_catalog(corpus, tmp_path_factory):
    """Six good photos and an attribute index of them, built with the corpus run's export."""
    from runway_cnn.inference.attribute_index import build_attribute_index

    root = tmp_path_factory.mktemp("catalog")
    photos = make_image_folder(root / "photos", CLASSES, per_class=2, size=(40, 48))
    build_attribute_index(corpus["run"].export_path, photos, root / "recommend", epochs=3,
                          progress=False)
    return photos, root / "recommend"


def test_broken_indexes_and_index_flags_are_one_line_errors(corpus, small_catalog, tmp_path):
    from runway_cnn import index as index_cli
    from runway_cnn import recommend as recommend_cli
    from runway_cnn.inference.retrieval import EMBEDDINGS, FORMAT, INDEX_JSON

    photos, recommend = small_catalog
    photo = str(next(photos.rglob("*.jpg")))
    no_path = tmp_path / "no_path"
    no_path.mkdir()
    np.save(no_path / EMBEDDINGS, np.eye(3, 16, dtype=np.float32))
    (no_path / INDEX_JSON).write_text(json.dumps({
        "format": FORMAT, "model": str(corpus["run"].export_path), "width": 16, "count": 3,
        "items": [{"path": photo}, {"label": "checks"}, {"path": photo}], "skipped": []}))
    code, _, stderr = run_cli(index_cli.main, ["query", "--index", str(no_path), photo])
    assert_one_line_error(code, stderr, str(no_path / INDEX_JSON), "item 1", "'path'")
    code, _, stderr = _index_command("index", corpus["run"].export_path, photos,
                                     tmp_path / "out", "--batch_size", "0")
    assert_one_line_error(code, stderr, "--batch_size 0")
    assert not (tmp_path / "out").exists()
    nan_row = tmp_path / "nan_row"
    shutil.copytree(recommend, nan_row)
    with np.load(nan_row / "index.npz") as saved:
        arrays = dict(saved)
    arrays["vectors"][2, 1] = np.nan
    np.savez(nan_row / "index.npz", **arrays)
    code, _, stderr = run_cli(recommend_cli.main, ["query", "--index", str(nan_row), photo])
    assert_one_line_error(code, stderr, str(nan_row / "index.npz"), "row 2", "NaN")


def test_index_builds_refuse_a_folder_of_the_users_files(corpus, small_catalog, tmp_path):
    photos, _ = small_catalog
    model = corpus["run"].export_path
    for tool in ("index", "recommend"):
        mine = tmp_path / f"{tool}_mine"
        mine.mkdir()
        (mine / "index.json").write_text('{"my": "own notes"}')
        (mine / "map.png").write_bytes(b"my own map")
        before = snapshot(mine)
        code, _, stderr = _index_command(tool, model, photos, mine)
        assert_one_line_error(code, stderr, str(mine), "--overwrite")
        assert snapshot(mine) == before, tool  # nothing written over
        own = tmp_path / f"{tool}_own"  # its own earlier output is rebuilt without a word
        for _ in range(2):
            code, _, stderr = _index_command(tool, model, photos, own)
            assert code == 0, stderr
        code, _, stderr = run_cli(
            __import__(f"runway_cnn.{tool}", fromlist=["main"]).main,
            ["query", "--index", str(own), str(next(photos.rglob("*.jpg")))])
        assert code == 0 and (own / "neighbours.png").exists(), stderr
        code, _, stderr = _index_command(tool, model, photos, own)  # with its query's grid
        assert code == 0, stderr
        (own / "notes.txt").write_text("mine")
        code, _, stderr = _index_command(tool, model, photos, own)
        assert_one_line_error(code, stderr, str(own), "notes.txt", "--overwrite")
        code, _, stderr = _index_command(tool, model, photos, mine, "--overwrite")
        assert code == 0, stderr
        assert json.loads((mine / "index.json").read_text())["count"] == 6
    # an index of the other command is not this command's output either
    code, _, stderr = _index_command("index", model, photos, tmp_path / "recommend_own")
    assert_one_line_error(code, stderr, str(tmp_path / "recommend_own"), "--overwrite")


def test_parameter_servers_and_bad_seeds_are_one_line_errors(corpus, tmp_path, monkeypatch):
    from runway_cnn import datasets as datasets_cli
    from runway_cnn.training import distribution

    def never(*args, **kwargs):
        raise AssertionError("a MultiWorkerMirroredStrategy was built")

    monkeypatch.setattr(distribution.tf.distribute, "MultiWorkerMirroredStrategy", never)
    for cluster, task in (({"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "worker"),
                          ({"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "ps")):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                    "task": {"type": task, "index": 0}}))
        code, _, stderr = run_cli(finetune_cli.main, _small_config(
            corpus, tmp_path, corpus["dataset"], strategy="multi_worker"))
        assert_one_line_error(code, stderr, "TF_CONFIG", "'ps'", "parameter-server",
                              "'chief', 'worker'")
    monkeypatch.delenv("TF_CONFIG")
    for seed in (-1, 2 ** 32):
        code, _, stderr = run_cli(finetune_cli.main, _small_config(
            corpus, tmp_path, corpus["dataset"], seed=seed))
        assert_one_line_error(code, stderr, f"--seed {seed}")
        code, _, stderr = run_cli(datasets_cli.main, [
            "convert", "--dataset_dir", str(corpus["dataset"]), "--output_dir",
            str(tmp_path / "records"), "--seed", str(seed)])
        assert_one_line_error(code, stderr, f"--seed {seed}")
    code, _, stderr = run_cli(finetune_cli.main, _small_config(
        corpus, tmp_path, corpus["dataset"], seed=2 ** 32 - 3, num_splits=5))
    assert_one_line_error(code, stderr, "--seed", "--num_splits")
    assert not (tmp_path / "train").exists() and not (tmp_path / "records").exists()


def _worker_command(corpus, tmp_path, peer: str, *extra: str) -> tuple[list[str], dict]:
    """``finetune --strategy multi_worker`` as worker 0 of a loopback port and ``peer``."""
    cluster = {"worker": [f"127.0.0.1:{free_ports(1)[0]}", peer]}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": 0}}),
        "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                  os.environ.get("PYTHONPATH")) if p)}
    argv = [sys.executable, "-m", "runway_cnn.finetune", "--strategy", "multi_worker",
            *_small_config(corpus, tmp_path, corpus["dataset"]), *extra]
    return argv, env


def test_a_worker_whose_peer_never_answers_ends_in_one_line(corpus, tmp_path):
    argv, env = _worker_command(corpus, tmp_path, "no-such-host.invalid:2222",
                                "--worker_timeout", "3")
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert time.monotonic() - start < 60
    assert "waiting" in done.stdout and "no-such-host.invalid:2222" in done.stdout, done.stdout
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    for text in ("worker 1", "no-such-host.invalid:2222", "3 s", "--worker_timeout"):
        assert text in errors[0], (text, errors[0])
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_end_a_waiting_worker(corpus, tmp_path, signal_number):
    argv, env = _worker_command(corpus, tmp_path, f"127.0.0.1:{free_ports(1)[0]}")
    # as started from a terminal: a shell starts background jobs (a CI script's `cmd &`) with
    # SIGINT ignored, and a child inherits that, so the worker's SIGINT is set back to default
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        waiting = threading.Event()

        def watch() -> None:
            for line in proc.stdout:
                if "waiting" in line:
                    waiting.set()

        errors: list[str] = []  # read as it comes: a full pipe would block the worker's exit
        threading.Thread(target=watch, daemon=True).start()
        reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
        reader.start()
        assert waiting.wait(90), "no 'waiting' line"
        time.sleep(1)
        proc.send_signal(signal_number)
        try:
            code = proc.wait(timeout=60)  # a safety net, not a speed target (slow exits)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(10)
            pytest.fail("the worker did not end within 60 s of the signal; its stderr: "
                        + "".join(errors)[-3000:])
        reader.join(10)
        stderr = "".join(errors)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == (130 if signal_number == signal.SIGINT else -signal.SIGTERM), stderr[-2000:]
    assert "Traceback" not in stderr


def test_app_on_a_port_in_use_is_one_line(corpus):
    pytest.importorskip("uvicorn", reason="the [app] extra is not installed")
    from runway_cnn.app import __main__ as app_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, stderr = run_cli(app_cli.main, ["--model", str(corpus["run"].export_path),
                                                 "--port", str(port)])
    assert_one_line_error(code, stderr, "--port", f"127.0.0.1:{port}", "in use")


def test_ctrl_c_on_the_web_app_says_it_stopped(corpus, monkeypatch):
    pytest.importorskip("uvicorn", reason="the [app] extra is not installed")
    import uvicorn

    from runway_cnn.app import __main__ as app_cli

    class CtrlC:  # uvicorn's server on a SIGINT: it shuts down, then raises it again
        def __init__(self, config):
            pass

        def run(self, sockets):
            raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn, "Server", CtrlC)
    monkeypatch.setattr(uvicorn, "Config", lambda *args, **kwargs: None)  # its logging set-up
    # closes every logging handler, pytest's too
    port = free_ports(1)[0]
    code, _, stderr = run_cli(app_cli.main, ["--model", str(corpus["run"].export_path),
                                             "--port", str(port)])
    assert code == 130 and stderr.splitlines()[-1] == f"stopped: http://127.0.0.1:{port}/ is " \
                                                      "closed", stderr


_INTERRUPTED_IMPORT = """
import runpy, sys
class CtrlC:  # a Ctrl-C at the first heavy import (numpy, Keras, TensorFlow: seconds of them)
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("numpy", "keras", "tensorflow"):
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
command = sys.argv.pop(1)
if command == "runway-cnn":  # the console script (setup.cfg)
    from runway_cnn.cli.main import run
    run()
else:  # python -m runway_cnn.COMMAND
    runpy.run_module(command, run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_tensorflow_imports_is_one_line(monkeypatch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH"))
        if p)}
    commands = [f"runway_cnn.{name}" for name in (
        "finetune", "predict", "evaluate", "export", "serving", "index", "recommend", "report",
        "checkpoints", "datasets", "audit")] + ["runway-cnn"]
    own_args = {"runway_cnn.report": ["photos"], "runway_cnn.export": ["--train_dir", "photos"],
                "runway_cnn.app": ["--model", "photos", "--port", "0"]}
    commands.append("runway_cnn.app")
    for command in commands:  # report, export and app read their flags before anything heavy
        args = own_args.get(command, ["finetune", "--dataset_dir", "photos"])
        done = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT, command, *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert (done.returncode, done.stderr) == (130, "interrupted\n"), (command, done.stderr)
    import runway_cnn.api

    def ctrl_c(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(runway_cnn.api, "fine_tune", ctrl_c)  # a run began: it resumes
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", "photos"])
    assert (code, stderr) == (130, "interrupted; run the same command again to resume\n")


def test_no_input_file_changed(corpus):
    """Last in this module: after every entry point above, the user's files are as they were."""
    root = corpus["root"]
    assert snapshot(root / "photos") | snapshot(root / "outside") == corpus["before"]
