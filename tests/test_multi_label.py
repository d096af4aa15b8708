"""Multi-label styles: the CSV source and its bad rows, iterative-stratification splits, the
figures against hand counts and scikit-learn, ASL, the one-vs-rest stage 1, per-label thresholds
through export and restore, and the whole run (train → export → Predictor / predict / evaluate)
on test-made photos whose labels co-occur by construction."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from helpers import (assert_refit_on_every_split, make_multilabel_folder, predict_csv_rows,
                     run_cli, tags_of, tflite_and_client_answers, tiny_csv_run)
from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn import evaluate as evaluate_cli
from runway_cnn.data.manifest import scan_labels_csv
from runway_cnn.errors import DataError
from runway_cnn.inference.predictor import Predictor
from runway_cnn.tasks import MultiLabelTask
from runway_cnn.tasks.losses import AsymmetricLoss
from runway_cnn.training.restore import restore_run
from tiny_models import make_tiny_hub_module

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_label")
    photos, labels_csv = make_multilabel_folder(root)
    hub = make_tiny_hub_module(root / "hub")
    result = tiny_csv_run(photos, labels_csv, "multi_label", root / "run", hub)
    return root, photos, labels_csv, hub, result


# --- data ---------------------------------------------------------------------------------------

def test_every_bad_csv_row_is_reported_and_none_is_lost(tmp_path):
    photos, labels_csv = make_multilabel_folder(tmp_path, per_kind=2)
    (photos / "notes.jpg").write_text("not a photo")
    (tmp_path / "outside.jpg").write_bytes((photos / "kind0_00.jpg").read_bytes())
    lines = labels_csv.read_text().splitlines()
    lines += ["missing.jpg,disc", "kind0_00.jpg,checks", "../outside.jpg,disc", ",disc",
              "kind0_01.jpg", "notes.jpg,disc", "kind1_00.jpg,checks;disc;sparkly,extra"]
    labels_csv.write_text("\n".join(lines) + "\n")
    rows = scan_labels_csv(photos, labels_csv, MultiLabelTask.raw_label)
    reasons = {r["line"]: r["reason"] for r in rows.bad_rows}
    assert reasons[18].startswith("no such file")
    assert reasons[19] == "duplicate of line 2"
    assert "leaves the image folder" in reasons[20]
    assert reasons[21] == "empty file name"
    assert reasons[22] == reasons[24] == "too many or too few cells for the header"
    assert [(s["path"], s["reason"]) for s in rows.skipped] == [("notes.jpg", "not an image")]
    assert len(rows.sources) + len(rows.bad_rows) + len(rows.skipped) == len(lines) - 1
    with pytest.raises(DataError, match="no 'filename' column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("file,labels\nkind0_00.jpg,disc\n")
        scan_labels_csv(photos, bad, MultiLabelTask.raw_label)


def test_unknown_labels_with_a_fixed_vocabulary_are_counted(tmp_path):
    photos, labels_csv = make_multilabel_folder(tmp_path, per_kind=3)
    vocabulary = tmp_path / "vocabulary.txt"
    vocabulary.write_text("striped\ndark\ndisc\nchecks\n")  # no hstripes / vstripes
    from runway_cnn.training.datasets import load_dataset

    config = FinetuneConfig(dataset_dir=str(photos), labels_csv=str(labels_csv),
                            labels_file=str(vocabulary), task="multi_label",
                            train_dir=str(tmp_path / "run"), validation_fraction=0.25,
                            test_fraction=0.25)
    dataset, task = load_dataset(config, tmp_path / "run")
    assert task.labels == ["striped", "dark", "disc", "checks"]  # the file's order
    report = dataset.report()
    assert report["unknown_labels"] == {"hstripes": 6, "vstripes": 6}
    total = {name: sum(counts[name] for counts in report["counts"].values())
             for name in task.labels}
    assert total == {"striped": 12, "dark": 12, "disc": 6, "checks": 6}


def test_iterative_stratification_keeps_every_label_in_every_split():
    targets = np.array([[float(t in tags_of(k)) for t in ("checks", "disc", "hstripes",
                                                           "vstripes", "striped", "dark")]
                        for k in range(8) for _ in range(10)], np.float32)
    task = MultiLabelTask(["checks", "disc", "hstripes", "vstripes", "striped", "dark"])
    index = task.split(targets, 0.2, 0.2, seed=0)
    assert sorted(np.concatenate(list(index.values())).tolist()) == list(range(80))
    for name, idx in index.items():  # every label within 2 images of its proportional count
        expected = targets.mean(axis=0) * len(idx)
        assert np.abs(targets[idx].sum(axis=0) - expected).max() <= 2, name
    folds = task.kfold(targets, 4, seed=0, validation_fraction=0.2)
    assert sorted(np.concatenate([f["test"] for f in folds]).tolist()) == list(range(80))
    assert all((targets[f["test"]].sum(axis=0) > 0).all() for f in folds)


# --- figures, loss, thresholds ------------------------------------------------------------------

def test_figures_equal_hand_counts_and_scikit_learn():
    task = MultiLabelTask(["a", "b", "c"], thresholds=[0.5, 0.5, 0.5])
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    scores = np.array([[0.9, 0.2, 0.4], [0.3, 0.8, 0.1], [0.6, 0.4, 0.7], [0.2, 0.1, 0.55]])
    figures = task.evaluate(truth, scores)
    # predicted at 0.5: a {0, 2}, b {1}, c {2, 3}; truth: a {0, 2}, b {1, 2}, c {0, 3}
    cp, cr = np.mean([2 / 2, 1 / 1, 1 / 2]), np.mean([2 / 2, 1 / 2, 1 / 2])
    op, or_ = 4 / 5, 4 / 6
    assert figures["cp"] == pytest.approx(cp) and figures["cr"] == pytest.approx(cr)
    assert figures["cf1"] == pytest.approx(2 * cp * cr / (cp + cr))
    assert figures["op"] == pytest.approx(op) and figures["or"] == pytest.approx(or_)
    assert figures["of1"] == pytest.approx(2 * op * or_ / (op + or_))
    expected_map = np.mean([skm.average_precision_score(truth[:, j], scores[:, j])
                            for j in range(3)])
    assert figures["map"] == pytest.approx(expected_map)
    assert figures["per_label"]["b"]["ap"] == pytest.approx(
        skm.average_precision_score(truth[:, 1], scores[:, 1]))
    # top-3 of 3 labels: everything predicted
    assert figures["or_top3"] == 1.0 and figures["op_top3"] == pytest.approx(6 / 12)
    assert figures["loss"] == pytest.approx(skm.log_loss(truth.ravel(), scores.ravel()))


def test_asymmetric_loss_is_the_papers_formula_and_bce_without_focusing():
    y = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
    logits = np.array([[2.0, -1.0, 0.5, -0.3]], np.float32)
    p = 1 / (1 + np.exp(-logits))
    p_m = np.maximum(p - 0.05, 0)
    expected = -np.mean(y * np.log(p) + (1 - y) * p_m ** 4 * np.log(1 - p_m))
    assert float(AsymmetricLoss()(y, logits)) == pytest.approx(expected, rel=1e-5)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(AsymmetricLoss(0, 0, 0)(y, logits)) == pytest.approx(bce, rel=1e-5)


def test_thresholds_are_the_best_f1_per_label_and_the_flag_overrides_them():
    task = MultiLabelTask(["a", "b"])
    truth = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], np.float32)
    scores = np.array([[0.35, 0.1], [0.3, 0.9], [0.2, 0.8], [0.1, 0.7], [0.6, 0.2]])
    task.calibrate(truth, scores)
    # a: cutting at 0.3 keeps its three positives and no negative (F1 1), midway to 0.2 below;
    # b: cutting at 0.8 likewise, midway to 0.7
    np.testing.assert_allclose(task.thresholds, [0.25, 0.75], atol=1e-6)
    assert ((scores >= task.thresholds) == truth.astype(bool)).all()
    fixed = MultiLabelTask(["a", "b"], threshold=0.75)
    fixed.calibrate(truth, scores)
    assert fixed.thresholds.tolist() == [0.75, 0.75]


# --- the whole run ------------------------------------------------------------------------------

def test_stage1_is_one_vs_rest_logistic_regression_and_beats_chance(trained):
    *_, result = trained
    stage1 = result.metrics["stages"]["stage1"]
    assert stage1["solver"]["solver"] == "newton one-vs-rest"
    chance = np.mean([c / result.metrics["test"]["num_examples"] for c in
                      result.metrics["label_counts"]["test"].values()])
    assert result.metrics["test"]["map"] > chance + 0.2


def test_thresholds_travel_with_the_export_and_the_restored_run(trained):
    *_, result = trained
    thresholds = result.task.config()["thresholds"]
    assert thresholds and len(thresholds) == len(result.task.labels)
    predictor = Predictor(result.export_path)
    np.testing.assert_allclose(predictor.task.thresholds, thresholds)
    tsv = (result.export_path / "assets" / "thresholds.tsv").read_text().split()
    assert tsv[0::2] == result.task.labels
    np.testing.assert_allclose([float(t) for t in tsv[1::2]], thresholds, atol=1e-6)
    restored = restore_run(result.train_dir)
    np.testing.assert_allclose(restored.task.thresholds, thresholds)


def test_predictor_predict_and_evaluate_give_label_sets(trained, tmp_path):
    root, photos, labels_csv, _, result = trained
    predictor = Predictor(result.export_path)
    files = sorted(photos.glob("kind*_0[0-2].jpg"))
    results = predictor.predict(files)
    outputs = predictor.outputs(files)
    for result_row, p in zip(results, outputs["probabilities"]):
        chosen = [n for n, s, t in zip(predictor.labels, p, predictor.task.thresholds) if s >= t]
        assert sorted(result_row["labels"]) == sorted(chosen)
        assert result_row["scores"] == sorted(result_row["scores"], reverse=True)
    rows = predict_csv_rows(result.export_path, files, tmp_path / "p.csv")
    assert list(rows[0]) == ["path", "labels", "scores", "error"]
    assert [r["labels"].split(";") if r["labels"] else [] for r in rows] == \
        [r["labels"] for r in results]
    code, stdout, stderr = run_cli(evaluate_cli.main, [
        "--model", str(result.export_path), "--dataset_dir", str(photos), "--labels_csv",
        str(labels_csv), "--output_dir", str(tmp_path / "eval")])
    assert code == 0, stderr
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["num_examples"] == 64 and 0 <= report["map"] <= 1
    assert "mAP" in stdout and (tmp_path / "eval" / "per_label_ap.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "per_label.csv").read_text().startswith("label,ap,")


# --- ML-GCN -------------------------------------------------------------------------------------

def test_label_graph_is_the_papers_reweighted_conditional_probabilities():
    from runway_cnn.tasks.mlgcn import label_adjacency

    #            a  b  c  d
    y = np.array([[1, 1, 0, 0],
                  [1, 1, 0, 0],
                  [1, 0, 1, 0],
                  [1, 0, 0, 0],
                  [0, 1, 0, 0],
                  [0, 0, 0, 1]])
    # N = (4, 3, 1, 1); P(b|a) = 2/4, P(c|a) = 1/4, P(a|b) = 2/3, P(a|c) = 1, P(d|·) = 0
    # at τ = 0.4: a→b, b→a, c→a; d has no neighbour
    expected = np.array([[0.8, 0.2, 0.0, 0.0],
                         [0.2, 0.8, 0.0, 0.0],
                         [0.2, 0.0, 0.8, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(label_adjacency(y), expected, atol=1e-7)
    two = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0]])  # a→b, a→c (2/3 each), b→a,c; c→a,b
    adjacency = label_adjacency(two)
    np.testing.assert_allclose(adjacency.sum(axis=1), 1.0, atol=1e-7)
    np.testing.assert_allclose(adjacency[0], [0.8, 0.1, 0.1], atol=1e-7)


def test_graph_classifier_is_features_times_the_gcn_classifiers():
    from runway_cnn.tasks.mlgcn import GraphClassifier

    rng = np.random.default_rng(0)
    adjacency = np.array([[0.8, 0.2], [0.2, 0.8]], np.float32)
    embeddings = rng.normal(size=(2, 3)).astype(np.float32)
    layer = GraphClassifier(adjacency, embeddings, feature_dim=5, hidden=4)
    w1, w2 = (np.asarray(w) for w in layer.get_weights())
    hidden = adjacency @ embeddings @ w1
    classifiers = adjacency @ np.where(hidden > 0, hidden, 0.2 * hidden) @ w2
    features = rng.normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(layer(features)), features @ classifiers.T, atol=1e-5)


def test_mlgcn_learns_co_occurring_labels_and_travels_with_its_graph(trained, tmp_path):
    root, photos, labels_csv, hub, _ = trained
    result = fine_tune(FinetuneConfig(
        dataset_dir=str(photos), labels_csv=str(labels_csv), task="multi_label", head="mlgcn",
        loss="asl", train_dir=str(tmp_path / "run"), model_name=f"hub:{hub}", image_size=32,
        batch_size=8, stage1_epochs=30, stage2_epochs=0, learning_rate=3e-3,
        validation_fraction=0.25, test_fraction=0.25, verbose=0))
    assert result.metrics["stages"]["stage1"]["solver"] == {"solver": "adam"}
    chance = np.mean([c / result.metrics["test"]["num_examples"] for c in
                      result.metrics["label_counts"]["test"].values()])
    assert result.metrics["test"]["map"] > chance + 0.15
    adjacency = np.asarray(result.task.config()["adjacency"])
    striped, hstripes = result.task.labels.index("striped"), result.task.labels.index("hstripes")
    assert adjacency[hstripes, striped] > 0  # every hstripes image is striped
    predictor = Predictor(result.export_path)
    restored = restore_run(result.train_dir)
    np.testing.assert_allclose(restored.task.config()["adjacency"], adjacency)
    files = sorted(photos.glob("kind2_0[0-3].jpg"))
    from runway_cnn.data.pipeline import eval_crops
    images = eval_crops([str(f) for f in files], restored.backbone.preprocessing, 8)
    np.testing.assert_allclose(restored.task.probabilities(np.asarray(restored.model(images))),
                               predictor.probabilities(images), atol=1e-5)


@pytest.mark.parametrize("images,dims", [(300, 40), (60, 200)])
def test_joint_one_vs_rest_solver_is_scikit_learns_logistic_regression_per_label(images, dims):
    """Along a warm-started C path, with more images than dimensions and (as on real photos)
    fewer, with a repeated column (rank-deficient) and a large feature mean: every label's
    probabilities equal a tight scikit-learn fit's."""
    from sklearn.linear_model import LogisticRegression

    from runway_cnn.tasks.logistic import OneVsRestLogistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(images, dims)) + 3.0
    x[:, 1] = x[:, 0]
    y = (x - 3.0) @ rng.normal(size=(dims, 5)) / np.sqrt(dims) + rng.normal(size=(images, 5)) > 0.3
    solver = OneVsRestLogistic(x, y)
    for c in (0.01, 0.3, 3.0):
        kernel, bias = solver.fit(c)
        for j in range(5):
            reference = LogisticRegression(C=c, max_iter=20000, tol=1e-10).fit(x, y[:, j])
            np.testing.assert_allclose(1 / (1 + np.exp(-(x @ kernel[:, j] + bias[j]))),
                                       reference.predict_proba(x)[:, 1], atol=1e-4)


def test_tflite_and_client_answers_carry_the_label_sets(trained, tmp_path):
    from runway_cnn.inference.predictor import INVALID_IMAGE

    _, photos, _, _, result = trained
    files = sorted(photos.glob("kind3_0[0-2].jpg"))
    predictor, decoded = tflite_and_client_answers(result, files, tmp_path, "styles")
    for got, want in zip(decoded[:-1], predictor.predict(files)):  # batch changes last bits
        assert got["labels"] == want["labels"]
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-6)
    assert decoded[-1] == {"labels": [], "scores": [], "error": INVALID_IMAGE}


def test_a_finished_run_exported_again_keeps_its_thresholds(trained, tmp_path):
    import shutil

    root, photos, labels_csv, hub, result = trained
    train_dir = tmp_path / "run"
    shutil.copytree(result.train_dir, train_dir, ignore=shutil.ignore_patterns("export"))
    again = fine_tune(FinetuneConfig(
        dataset_dir=str(photos), labels_csv=str(labels_csv), task="multi_label",
        train_dir=str(train_dir), model_name=f"hub:{hub}", image_size=32, batch_size=8,
        stage2_epochs=0, validation_fraction=0.25, test_fraction=0.25, verbose=0))
    assert again.export_path.parent.parent == train_dir / "export"  # exported anew
    np.testing.assert_allclose(Predictor(again.export_path).task.thresholds,
                               result.task.config()["thresholds"])


def test_a_class_folder_is_one_tag_not_its_letters():
    task = MultiLabelTask(MultiLabelTask.label_space(["dress", ("dress", "red")]))
    assert task.labels == ["dress", "red"]
    np.testing.assert_array_equal(task.targets(["dress", ("red",)], "folders"),
                                  [[1, 0], [0, 1]])
    assert task.unknown_labels(["skirt"]) == {"skirt": 1}


def test_the_export_is_refit_on_every_split_with_validations_choices(trained):
    *_, result = trained
    assert_refit_on_every_split(result)
    thresholds = dict(zip(result.task.labels, result.task.config()["thresholds"]))
    assert thresholds == pytest.approx(result.metrics["decision"]["thresholds"])  # validation's
