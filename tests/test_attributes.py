"""Garment attributes (``--task attributes``): a CSV of attribute columns with unknown cells and a
rare value, trained, exported, served and evaluated end to end on test-made photos; the masked
loss, the balancing weights, the stage-1 solver and the metrics against hand counts and
scikit-learn."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from helpers import (PATTERNS, assert_one_line_error, assert_refit_on_every_split,
                     predict_csv_rows, run_cli, tflite_and_client_answers, tiny_csv_run,
                     write_attribute_photos)
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.data import pipeline
from runway_cnn.data.preprocessing import PreprocessingSpec
from runway_cnn.errors import DataError
from runway_cnn.inference.evaluation import evaluate_model
from runway_cnn.inference.batch import predict
from runway_cnn.inference.predictor import Predictor
from runway_cnn.tasks import AttributeTask
from runway_cnn.tasks.losses import MaskedAttributeCrossentropy
from runway_cnn.training.restore import restore_run

@pytest.fixture(scope="module")
def attribute_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("attributes")
    photos, labels_csv = write_attribute_photos(root)
    result = tiny_csv_run(photos, labels_csv, "attributes", root / "run",
                          make_tiny_hub_module(root / "hub"))
    return root, photos, labels_csv, result


def test_label_space_merges_or_drops_rare_values_and_reports_them():
    raw = [{"pattern": p, "sleeve": s} for p, s in
           [("a", "long")] * 5 + [("b", "short")] * 5 + [("a", "cap")] * 2 + [("b", None)]]
    merged = AttributeTask.label_space(raw, min_count=5, rare="merge")
    assert merged == ["pattern=a", "pattern=b", "sleeve=long", "sleeve=short", "sleeve=other"]
    task = AttributeTask(merged, rare="merge")
    targets = task.targets(raw, "x.csv")
    assert targets[-3:, 1].tolist() == [2, 2, -1]  # cap → other; the empty cell unknown
    assert task.unknown_labels(raw) == {"sleeve=cap → other": 2}
    dropped = AttributeTask.label_space(raw, min_count=5, rare="drop")
    task = AttributeTask(dropped, rare="drop")
    assert task.targets(raw, "x.csv")[-3:, 1].tolist() == [-1, -1, -1]
    assert task.unknown_labels(raw) == {"sleeve=cap → unknown (dropped)": 2}
    assert AttributeTask.label_space(raw, attributes="sleeve", min_count=1) == \
        ["sleeve=cap", "sleeve=long", "sleeve=short"]
    with pytest.raises(DataError, match="colour"):
        AttributeTask.label_space(raw, attributes="colour")
    with pytest.raises(DataError, match="'sleeve' has 1 value"):
        AttributeTask.label_space(raw, min_count=6)  # only 'other' left: nothing to learn


def test_unknown_cells_never_reach_the_loss_and_weights_scale_it():
    targets = np.array([[0, -1], [2, 1]], np.int32)
    logits = np.array([[2.0, -1.0, 0.5, 0.3, 0.9], [0.1, 0.4, -2.0, -2.0, 1.0]], np.float32)
    loss = MaskedAttributeCrossentropy([3, 2])
    changed = logits.copy()
    changed[0, 3:] = [9.0, -9.0]  # the unknown second attribute of image 0
    assert np.allclose(loss.call(targets, logits), loss.call(targets, changed))
    changed[0, :3] = [-9.0, 9.0, 0.0]  # a known cell does count
    assert not np.allclose(loss.call(targets, logits), loss.call(targets, changed))

    def cross(row, start, size, target):
        z = logits[row, start:start + size].astype(np.float64)
        return np.log(np.exp(z).sum()) - z[target]

    expected = [cross(0, 0, 3, 0), cross(1, 0, 3, 2) + cross(1, 3, 2, 1)]
    np.testing.assert_allclose(loss.call(targets, logits), expected, rtol=1e-5)
    weighted = MaskedAttributeCrossentropy([3, 2], attribute_weights=[1.0, 3.0],
                                           value_weights=[2.0, 1.0, 0.5, 1.0, 4.0])
    np.testing.assert_allclose(weighted.call(targets, logits),
                               [2.0 * cross(0, 0, 3, 0),
                                0.5 * cross(1, 0, 3, 2) + 3.0 * 4.0 * cross(1, 3, 2, 1)],
                               rtol=1e-5)


def test_oversampling_weights_are_repeat_factors_and_reach_the_pipeline(tmp_path):
    task = AttributeTask(["pattern=a", "pattern=b", "tone=x", "tone=y"], balance="oversample")
    # pattern: 8 a, 2 b (t = 1/2: b repeats √(0.5 / 0.2));
    # tone known on 9: 5 x, 4 y (y repeats √(0.5 / (4/9)))
    targets = np.array([[0, 0]] * 5 + [[0, 1]] * 3 + [[1, 1], [1, -1]], np.int32)
    weights = task.sample_weights(targets)
    factors = np.array([1.0] * 5 + [np.sqrt(0.5 / (4 / 9))] * 3 + [np.sqrt(0.5 / 0.2)] * 2)
    np.testing.assert_allclose(weights, factors / factors.mean(), rtol=1e-6)
    share = weights[targets[:, 0] == 1].sum() / weights.sum()
    # the rare pattern now makes 28 % of the weighted draws, not its 20 % of the images
    assert share == pytest.approx(2 * np.sqrt(2.5) / (5 + 3 * np.sqrt(9 / 8) + 2 * np.sqrt(2.5)))
    assert AttributeTask(task.labels).sample_weights(targets) is None

    from PIL import Image
    paths = []
    for i in range(len(targets)):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(paths[-1])
    spec = PreprocessingSpec(image_size=16)
    for augmentation in (None, pipeline.Augmentation()):
        ds = pipeline.train_dataset(paths, targets, spec, batch_size=4,
                                    augmentation=augmentation, seed=0, weights=weights)
        seen = {}
        for images, labels, w in ds:
            for label, weight in zip(labels.numpy(), w.numpy()):
                seen.setdefault(tuple(label), set()).add(round(float(weight), 5))
        assert seen[(1, -1)] == {round(float(weights[-1]), 5)}
        assert seen[(0, 0)] == {round(float(weights[0]), 5)}


def test_stage1_solver_is_scikit_learns_multinomial_regression_per_attribute():
    from sklearn.linear_model import LogisticRegression

    from runway_cnn.tasks.logistic import SoftmaxPerAttribute

    rng = np.random.default_rng(0)
    for images, dims in ((300, 40), (60, 200)):
        x = rng.normal(size=(images, dims)) + 3.0
        x[:, 1] = x[:, 0]
        three = np.argmax((x - 3) @ rng.normal(size=(dims, 3)) + rng.normal(size=(images, 3)), 1)
        two = ((x - 3) @ rng.normal(size=dims) / np.sqrt(dims) + rng.normal(size=images) > 0)
        targets = np.stack([three, two.astype(int)], 1)
        targets[rng.random(images) < 0.2, 0] = -1
        targets[rng.random(images) < 0.3, 1] = -1
        weights = rng.uniform(0.5, 2.0, size=(images, 2))
        solver = SoftmaxPerAttribute(x, targets, [3, 2], weights)
        for c in (0.01, 0.3, 3.0):
            kernel, bias = solver.fit(c)
            known = targets[:, 0] >= 0
            reference = LogisticRegression(C=c, max_iter=20000, tol=1e-10).fit(
                x[known], targets[known, 0], sample_weight=weights[known, 0])
            z = x[known] @ kernel[:, :3] + bias[:3]
            p = np.exp(z - z.max(axis=1, keepdims=True))
            np.testing.assert_allclose(p / p.sum(axis=1, keepdims=True),
                                       reference.predict_proba(x[known]), atol=1e-4)
            # two values, one vector each with ½‖w₀‖² + ½‖w₁‖²: scikit-learn's binary at 2C
            known = targets[:, 1] >= 0
            reference = LogisticRegression(C=2 * c, max_iter=20000, tol=1e-10).fit(
                x[known], targets[known, 1], sample_weight=weights[known, 1])
            z = x[known] @ kernel[:, 3:] + bias[3:]
            np.testing.assert_allclose(1 / (1 + np.exp(z[:, 0] - z[:, 1])),
                                       reference.predict_proba(x[known])[:, 1], atol=1e-4)


def test_per_attribute_metrics_equal_scikit_learns():
    from sklearn import metrics as skm

    task = AttributeTask(["a=p", "a=q", "a=r", "b=x", "b=y"])
    task.prepare(np.array([[0, 0], [0, 1], [1, 1], [2, 1]]))  # majorities: a=p, b=y
    rng = np.random.default_rng(1)
    targets = np.stack([rng.integers(0, 3, 40), rng.integers(0, 2, 40)], 1)
    targets[rng.random(40) < 0.25, 1] = -1
    scores = task.probabilities(rng.normal(size=(40, 5)))
    figures = task.evaluate(targets, scores)
    for i, (a, start, size) in enumerate((("a", 0, 3), ("b", 3, 2))):
        known = targets[:, i] >= 0
        truth, guess = targets[known, i], scores[known, start:start + size].argmax(1)
        m = figures["per_attribute"][a]
        assert m["support"] == known.sum()
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(truth, guess))
        assert m["macro_f1"] == pytest.approx(skm.f1_score(truth, guess, average="macro"))
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, guess))
        constant = np.full_like(truth, 0 if a == "a" else 1)
        assert m["majority_accuracy"] == pytest.approx(skm.accuracy_score(truth, constant))
        assert m["confusion_matrix"] == skm.confusion_matrix(truth, guess,
                                                             labels=range(size)).tolist()
    assert figures["accuracy"] == pytest.approx(
        np.mean([figures["per_attribute"][a]["accuracy"] for a in "ab"]))


def test_attributes_train_export_serve_and_restore_end_to_end(attribute_run, tmp_path):
    root, photos, labels_csv, result = attribute_run
    task = result.task
    assert task.attributes == ["pattern", "tone", "sleeve"]
    assert task.values["sleeve"] == ["long", "short", "other"]  # 'cap' (2 images) merged
    report = json.loads((result.train_dir / "data_report.json").read_text())
    assert "sleeve=cap → other" in json.dumps(report, ensure_ascii=False)
    stage1 = result.metrics["stages"]["stage1"]["solver"]
    assert stage1["solver"] == "newton softmax per attribute" and set(stage1["C"]) == \
        set(task.attributes)
    test = result.metrics["test"]
    assert test["per_attribute"]["pattern"]["accuracy"] > 0.6  # chance 0.25
    assert test["per_attribute"]["tone"]["accuracy"] > \
        test["per_attribute"]["tone"]["majority_accuracy"] - 0.05
    evaluation = evaluate_model(result.export_path, photos, labels_csv=labels_csv,
                                output_dir=tmp_path / "eval")
    assert evaluation["per_attribute"]["pattern"]["support"] == 80  # every photo's pattern
    assert evaluation["per_attribute"]["tone"]["support"] == 72  # tone unknown on 8 photos
    for name in ("attributes.png", "confusion_pattern.png", "confusion_sleeve.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 5000
    with (tmp_path / "eval" / "per_attribute.csv").open() as f:
        assert [r["attribute"] for r in csv.DictReader(f)] == task.attributes

    predictor = Predictor(result.export_path)
    assert isinstance(predictor.task, AttributeTask)
    files = sorted(photos.glob("k*_3.jpg"))
    answers = predictor.predict(files + [b"not a photo"], per_image_errors=True)
    assert answers[-1]["error"] and answers[-1]["attributes"] == {}
    outputs = predictor.outputs(files)
    for answer, probabilities in zip(answers, outputs["probabilities"]):
        assert set(answer["attributes"]) == {"pattern", "tone", "sleeve"}
        for a, start, size in zip(task.attributes, task.starts, task.sizes):
            part = probabilities[start:start + size]
            assert answer["attributes"][a]["value"] == task.values[a][int(part.argmax())]
            assert answer["attributes"][a]["score"] == pytest.approx(float(part.max()), abs=1e-5)
    hits = [a["attributes"]["pattern"]["value"] == PATTERNS[int(f.name[1]) % 4]
            for a, f in zip(answers, files)]
    assert sum(hits) >= 6
    rows = predict_csv_rows(result.export_path, files, tmp_path / "p.csv")
    assert list(rows[0]) == ["path", "pattern", "tone", "sleeve", "error"]
    assert [r["tone"] for r in rows] == [a["attributes"]["tone"]["value"] for a in answers[:-1]]
    restored = restore_run(result.train_dir)
    assert isinstance(restored.task, AttributeTask)
    assert restored.task.config() == task.config()


def test_client_and_tflite_answers_carry_every_attribute(attribute_run, tmp_path):
    from runway_cnn.inference.predictor import INVALID_IMAGE

    _, photos, _, result = attribute_run
    files = sorted(photos.glob("k[0-7]_2.jpg"))
    predictor, decoded = tflite_and_client_answers(result, files, tmp_path, "attributes")
    for got, want in zip(decoded[:-1], predictor.predict(files)):
        assert set(got["attributes"]) == set(want["attributes"]) == set(result.task.attributes)
        for a in want["attributes"]:
            assert got["attributes"][a]["value"] == want["attributes"][a]["value"]
            assert got["attributes"][a]["score"] == pytest.approx(
                want["attributes"][a]["score"], abs=1e-6)
    assert decoded[-1] == {"attributes": {}, "error": INVALID_IMAGE}


def test_kfold_tests_every_image_once_with_every_value_in_every_fold():
    task = AttributeTask(["a=p", "a=q", "b=x", "b=y", "b=z"])
    rng = np.random.default_rng(0)
    targets = np.stack([rng.integers(0, 2, 60), rng.integers(0, 3, 60)], 1)
    targets[rng.random(60) < 0.2, 1] = -1
    folds = task.kfold(targets, 3, seed=0, validation_fraction=0.1)
    tested = np.concatenate([f["test"] for f in folds])
    assert sorted(tested) == list(range(60))
    for fold in folds:
        assert not set(fold["train"]) & set(fold["test"]) | set(fold["validation"]) & \
            set(fold["test"])
        counts = task.label_counts(targets[fold["test"]])
        assert min(counts.values()) > 0


def test_oversample_and_class_weight_runs_train_with_their_weights(attribute_run, tmp_path):
    root, photos, labels_csv, _ = attribute_run
    for balance in ("oversample", "class_weight"):
        result = fine_tune(FinetuneConfig(
            dataset_dir=str(photos), labels_csv=str(labels_csv), task="attributes",
            attributes="pattern,sleeve", balance=balance, attribute_weights="sleeve=2",
            train_dir=str(tmp_path / balance), model_name=f"hub:{make_tiny_hub_module(tmp_path / 'h')}",
            image_size=32, batch_size=8, stage1_solver="adam", stage1_epochs=3,
            stage2_epochs=1, validation_fraction=0.25, test_fraction=0.25, verbose=0))
        assert result.task.attributes == ["pattern", "sleeve"]
        assert result.metrics["stages"]["stage2"]["unfrozen_weights"] > 0  # stage 2 ran
        assert result.task.config()["attribute_weights"] == {"sleeve": 2.0}
        assert np.isfinite(result.metrics["test"]["loss"])


def test_bad_attribute_flags_are_one_line_errors(attribute_run, tmp_path):
    from runway_cnn import finetune as finetune_cli

    root, photos, labels_csv, _ = attribute_run
    base = ["--dataset_dir", str(photos), "--labels_csv", str(labels_csv), "--task", "attributes",
            "--model_name", f"hub:{make_tiny_hub_module(tmp_path / 'h')}", "--image_size", "32"]
    for extra, named in ((["--attributes", "pattern,colour"], "colour"),
                         (["--attribute_weights", "tone=heavy"], "tone=heavy"),
                         (["--attribute_weights", "neck=2"], "neck")):
        code, _, stderr = run_cli(finetune_cli.main,
                                  base + extra + ["--train_dir", str(tmp_path / extra[1])])
        assert_one_line_error(code, stderr, named)
    folders = make_image_folder(tmp_path / "folders", classes=("a", "b"), per_class=6)
    code, _, stderr = run_cli(finetune_cli.main, ["--dataset_dir", str(folders), "--task",
                                                  "attributes", "--train_dir",
                                                  str(tmp_path / "f")] + base[6:])
    assert_one_line_error(code, stderr, "--labels_csv")


@pytest.fixture(scope="module")
def catalog_index(attribute_run, tmp_path_factory):
    """The attribute model's index of its own photos plus one file that is not an image."""
    from runway_cnn.inference.attribute_index import build_attribute_index

    root, photos, _, result = attribute_run
    catalog = tmp_path_factory.mktemp("catalog")
    for path in sorted(photos.glob("*.jpg")):
        (catalog / path.name).write_bytes(path.read_bytes())
    (catalog / "broken.jpg").write_bytes(b"not a photo")
    output = catalog.parent / (catalog.name + "_index")
    summary = build_attribute_index(result.export_path, catalog, output, color_by="pattern",
                                    epochs=60, progress=False)
    return catalog, output, summary, result


def test_index_lists_what_it_skipped_and_writes_data_only_arrays_and_a_map(catalog_index):
    catalog, output, summary, result = catalog_index
    assert summary["count"] == 80
    assert [s["path"] for s in summary["skipped"]] == [str(catalog / "broken.jpg")]
    with np.load(output / "index.npz", allow_pickle=False) as arrays:
        assert arrays["vectors"].shape == (80, len(result.task.labels))
        np.testing.assert_allclose(arrays["vectors"][:, :4].sum(axis=1), 1.0, atol=1e-5)
        assert arrays["map"].shape == arrays["pca"].shape == (80, 2)
    for method in ("autoencoder", "pca"):
        assert 0.0 <= summary["map"][method]["trustworthiness"] <= 1.0
    assert (output / "map.png").stat().st_size > 20000  # points, contours and thumbnails


def test_neighbours_are_the_nearest_score_vectors_and_share_attributes(catalog_index, tmp_path):
    from runway_cnn.inference.attribute_index import AttributeIndex, query_attribute_index

    catalog, output, _, result = catalog_index
    task = result.task
    queries = [catalog / f"k{kind}_5.jpg" for kind in range(8)]
    answers = query_attribute_index(output, queries + [catalog / "broken.jpg"], k=4,
                          grid=tmp_path / "grid.png")
    assert answers[-1]["error"] == "not an image" and "neighbours" not in answers[-1]
    index = AttributeIndex(output)
    vectors = [r["probabilities"] for r in predict(result.export_path, queries,
                                                   probabilities=True)]
    shared = 0
    for query, answer, vector in zip(queries, answers, vectors):
        distance = np.linalg.norm(index.vectors - vector, axis=1)
        expected = np.argsort(distance, kind="stable")[:4]
        assert [n["path"] for n in answer["neighbours"]] == \
            [index.items[i]["path"] for i in expected]
        np.testing.assert_allclose([n["distance"] for n in answer["neighbours"]],
                                   distance[expected], atol=1e-5)
        assert answer["neighbours"][0]["path"] == str(query)  # the photo itself, distance 0
        shared += sum(Path(n["path"]).name[1] in {str(k) for k in range(8)
                                                  if k % 4 == int(query.name[1]) % 4}
                      for n in answer["neighbours"][1:])
    assert shared / (3 * len(queries)) > 0.5  # same pattern; chance 1/4
    assert (tmp_path / "grid.png").stat().st_size > 10000
    # on one attribute only: the distance counts that attribute's columns alone
    columns = task.label_groups()["tone"]
    answer = query_attribute_index(output, queries[:1], k=3, groups=["tone"])[0]
    distance = np.linalg.norm(index.vectors[:, columns] - vectors[0][columns], axis=1)
    np.testing.assert_allclose([n["distance"] for n in answer["neighbours"]],
                               np.sort(distance)[:3], atol=1e-5)


def test_damaged_or_foreign_indexes_are_one_line_errors(catalog_index, attribute_run, tmp_path):
    import shutil

    from runway_cnn import recommend as recommend_cli

    catalog, output, _, result = catalog_index
    photo = str(catalog / "k0_1.jpg")
    truncated = tmp_path / "truncated"
    shutil.copytree(output, truncated)
    data = (truncated / "index.npz").read_bytes()
    (truncated / "index.npz").write_bytes(data[:len(data) // 2])
    code, _, stderr = run_cli(recommend_cli.main, ["query", "--index", str(truncated), photo])
    assert_one_line_error(code, stderr, "index.npz", "rebuild")
    foreign = tmp_path / "foreign"
    shutil.copytree(output, foreign)
    meta = json.loads((foreign / "index.json").read_text())
    meta["task"]["labels"][0] = "pattern=zigzag"  # an index of another model's labels
    (foreign / "index.json").write_text(json.dumps(meta))
    code, _, stderr = run_cli(recommend_cli.main, ["query", "--index", str(foreign), photo])
    assert_one_line_error(code, stderr, "another model")
    meta["items"] = meta["items"][:-1]  # the JSON and the arrays disagree
    (foreign / "index.json").write_text(json.dumps(meta))
    code, _, stderr = run_cli(recommend_cli.main, ["query", "--index", str(foreign), photo])
    assert_one_line_error(code, stderr, "do not match")
    code, _, stderr = run_cli(recommend_cli.main, ["query", "--index", str(output), photo,
                                                   "--attributes", "neckline"])
    assert_one_line_error(code, stderr, "neckline")
    code, out, stderr = run_cli(recommend_cli.main, ["query", "--index", str(output), photo,
                                                     "--k", "2", "--grid",
                                                     str(tmp_path / "g.png")])
    assert code == 0, stderr
    lines = out.splitlines()
    assert lines[0].startswith(photo) and "pattern: " in lines[0] and len(lines) == 3
    assert (tmp_path / "g.png").exists()
    code, _, stderr = run_cli(recommend_cli.main, ["build", "--model", str(result.export_path),
                                                   "--catalog", str(catalog), "--output",
                                                   str(tmp_path / "cli_index"), "--epochs", "5"])
    assert code == 0, stderr
    assert "80 items indexed, 1 unreadable skipped" in stderr and "broken.jpg" in stderr
    assert (tmp_path / "cli_index" / "map.png").exists()


def test_the_export_is_refit_on_every_split_with_validations_choices(attribute_run):
    *_, result = attribute_run
    assert_refit_on_every_split(result)
