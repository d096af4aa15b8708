"""``runway_cnn.evaluate`` on a model trained here on test-made photos with the tiny backbone:
figures equal scikit-learn's on the same predictions, model path forms, label matching, CLI."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from sklearn import metrics as skm

from runway_cnn import FinetuneConfig, cli, fine_tune
from runway_cnn.errors import DataError
from runway_cnn.evaluate import main
from runway_cnn.inference.evaluation import default_output_dir, evaluate_model
from runway_cnn.data.pipeline import eval_crops
from runway_cnn.inference.predictor import Predictor
from conftest import make_image_folder
from tiny_models import make_tiny_hub_module

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run on a dataset with train/ validation/ test/ folders, exported."""
    root = tmp_path_factory.mktemp("evaluate")
    dataset = make_image_folder(root / "shop", CLASSES, per_class=6, size=(40, 72),
                                splits=("train", "validation", "test"))
    config = FinetuneConfig(dataset_dir=str(dataset), train_dir=str(root / "run"),
                            model_name=f"hub:{make_tiny_hub_module(root / 'hub')}", image_size=32,
                            batch_size=8, stage1_epochs=8, stage2_epochs=0, learning_rate=1e-2,
                            verbose=0)
    return root, dataset, fine_tune(config)


def test_figures_are_sklearns_on_the_same_predictions(trained):
    root, dataset, run = trained
    result = evaluate_model(run.train_dir, dataset)  # a train dir; split folders → test/
    assert result["split"] == "test" and result["num_examples"] == 24
    # the predictions, made independently with the in-memory Keras model of the run
    files = sorted((dataset / "test").rglob("*.jpg"))
    truth = np.array([CLASSES.index(f.parent.name) for f in files])
    images = eval_crops([str(f) for f in files], run.backbone.preprocessing, 8)
    predicted = run.task.probabilities(run.model.predict(images, verbose=0)).argmax(axis=1)
    by_source = {p["source"]: p for p in result["predictions"]}
    assert [by_source[f"test/{f.parent.name}/{f.name}"]["predicted"] for f in files] == \
        [CLASSES[i] for i in predicted]
    assert result["confusion_matrix"] == skm.confusion_matrix(truth, predicted).tolist()
    assert result["top1"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(truth, predicted, average="macro"))
    precision, recall, f1, support = skm.precision_recall_fscore_support(truth, predicted)
    assert [m["recall"] for m in result["per_class"].values()] == pytest.approx(recall)
    assert [m["support"] for m in result["per_class"].values()] == support.tolist()
    assert result["top1"] == pytest.approx(run.metrics["test"]["top1"])  # the trainer agrees
    for pair in result["worst_confusions"]:
        i, j = CLASSES.index(pair["true"]), CLASSES.index(pair["predicted"])
        assert pair["count"] == result["confusion_matrix"][i][j] > 0
    out = run.train_dir / "eval" / "shop_test"  # beside the model, not the cwd
    assert result["output_dir"] == str(out)
    assert json.loads((out / "eval.json").read_text())["top1"] == result["top1"]
    assert [r["class"] for r in csv.DictReader((out / "per_class.csv").open())] == list(CLASSES)
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_model_path_forms_and_default_output(trained):
    _, dataset, run = trained
    version = run.export_path
    for form in (version, version.parent, run.train_dir / "export", run.train_dir):
        assert Predictor(form).version_dir == version
    assert default_output_dir(version, version, dataset, "test") == \
        version.parent / "eval" / version.name / "shop_test"


def test_a_folder_without_split_folders_is_evaluated_whole(trained, tmp_path):
    _, _, run = trained
    flat = make_image_folder(tmp_path / "flat", CLASSES[:3], per_class=3, size=(40, 72), seed=3)
    result = evaluate_model(run.export_path, flat, output_dir=tmp_path / "out")
    assert result["split"] == "all" and result["num_examples"] == 9
    assert "no split folders" in result["images"]
    assert np.asarray(result["confusion_matrix"]).shape == (4, 4)  # the model's 4 labels
    assert np.asarray(result["confusion_matrix"])[3].sum() == 0
    assert (tmp_path / "out" / "confusion_matrix.png").exists()


def test_a_class_the_model_does_not_know_is_named(trained, tmp_path):
    _, dataset, run = trained
    copy = tmp_path / "shop"
    shutil.copytree(dataset, copy)
    make_image_folder(tmp_path / "extra", ("zigzag",), per_class=2)
    for split in ("train", "validation", "test"):
        shutil.copytree(tmp_path / "extra" / "zigzag", copy / split / "zigzag")
    with pytest.raises(DataError, match="zigzag"):
        evaluate_model(run.export_path, copy, output_dir=tmp_path / "out")
    with pytest.raises(DataError, match="no holdout/ folder"):
        evaluate_model(run.export_path, dataset, split="holdout", output_dir=tmp_path / "o")


def test_cli_prints_the_figures_and_user_errors_in_one_line(trained, tmp_path, capsys):
    _, dataset, run = trained
    main(["--model", str(run.export_path), "--dataset_dir", str(dataset), "--output_dir",
          str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "top1 " in printed and "precision" in printed and str(tmp_path / "out") in printed
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: main(["--model", str(tmp_path / "nothing"), "--dataset_dir",
                              str(dataset)]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nothing") in err
