"""The task interface is the only seam: a toy attribute task that is one folder
(``tests/toy_task/``: two softmax heads over one backbone, unknown cells masked out of the loss,
11 methods, the contract's defaults for the rest) plus the registry line below reads its CSV,
trains, exports, serves through Predictor, predict's CSV and the web page, restores, runs k-fold,
evaluate and predict with Grad-CAM and the audit — with nothing in training, export, inference
or the audit knowing it exists; and no module outside ``tasks/`` compares a task's name."""
from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image
from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.inference.predictor import Predictor
from runway_cnn.tasks import TASKS
from runway_cnn.training.restore import restore_run
from helpers import predict_csv_rows
from tiny_models import FEATURE_MAP_BACKBONE, make_tiny_hub_module
from toy_task import ATTRIBUTES, ToyAttributeTask

PACKAGE = Path(__file__).resolve().parent.parent / "runway_cnn"

if "toy_attributes" not in TASKS:
    TASKS.register("toy_attributes", ToyAttributeTask)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_task")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for kind in range(8):
        for i in range(8):
            name = f"k{kind}_{i}.jpg"
            image = make_image(kind, tuple(int(v) for v in rng.integers(40, 73, 2)), rng)
            if kind >= 4:
                image = image.point(lambda v: v // 2)
            image.save(photos / name, quality=90)
            tone = "dark" if kind >= 4 else "light"
            rows.append((name, ATTRIBUTES["pattern"][kind % 4], "" if i == 0 else tone))
    with (root / "attributes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "pattern", "tone"])
        writer.writerows(rows)
    result = fine_tune(FinetuneConfig(
        dataset_dir=str(photos), labels_csv=str(root / "attributes.csv"),
        task="toy_attributes", train_dir=str(root / "run"),
        model_name=f"hub:{make_tiny_hub_module(root / 'hub')}", image_size=32, batch_size=8,
        stage1_epochs=30, stage2_epochs=0, learning_rate=1e-2, validation_fraction=0.25,
        test_fraction=0.25, verbose=0))
    return root, photos, result


def test_unknown_cells_never_reach_the_loss():
    task = ToyAttributeTask(["pattern=a", "pattern=b", "tone=x", "tone=y"])
    targets = np.array([[0, -1], [1, 1]], np.int32)
    logits = np.array([[2.0, -1.0, 0.3, 0.9], [0.1, 0.4, -2.0, 1.0]], np.float32)
    changed = logits.copy()
    changed[0, 2:] = [9.0, -9.0]  # the unknown tone cell of image 0
    loss = task.loss()
    assert float(loss(targets, logits)) == pytest.approx(float(loss(targets, changed)))
    changed[0, :2] = [-9.0, 9.0]  # a known cell does count
    assert float(loss(targets, logits)) != pytest.approx(float(loss(targets, changed)))


def test_a_task_defined_in_a_test_file_trains_exports_and_serves(toy_run, tmp_path):
    root, photos, result = toy_run
    assert result.task.name == "toy_attributes"
    assert result.metrics["test"]["accuracy"] > 0.6  # chance: (1/4 + 1/2) / 2
    assert result.metrics["stages"]["stage1"]["solver"] == {"solver": "adam"}  # no convex form
    predictor = Predictor(result.export_path)
    assert isinstance(predictor.task, ToyAttributeTask)
    files = sorted(photos.glob("k*_1.jpg"))
    answers = predictor.predict(files + [b"not a photo"], per_image_errors=True)
    assert answers[-1]["error"]
    assert all(set(a) == {"pattern", "tone"} for a in answers[:-1])
    hits = [a["pattern"]["value"] == ATTRIBUTES["pattern"][int(f.name[1]) % 4]
            for a, f in zip(answers, files)]
    assert sum(hits) >= 6
    rows = predict_csv_rows(result.export_path, files, tmp_path / "p.csv")
    assert list(rows[0]) == ["path", "pattern", "tone", "error"]
    assert [r["pattern"] for r in rows] == [a["pattern"]["value"] for a in answers[:-1]]
    restored = restore_run(result.train_dir)
    assert isinstance(restored.task, ToyAttributeTask) and restored.task.labels == \
        result.task.labels


def test_the_toy_task_runs_kfold_evaluate_explain_and_the_audit(toy_run, tmp_path):
    from runway_cnn.audit.run import audit_dataset
    from runway_cnn.inference.evaluation import evaluate_model
    from runway_cnn.inference.batch import predict

    root, photos, _ = toy_run
    labels_csv = str(root / "attributes.csv")
    kfold = fine_tune(FinetuneConfig(  # a backbone with a feature map: Grad-CAM below
        dataset_dir=str(photos), labels_csv=labels_csv, task="toy_attributes",
        train_dir=str(tmp_path / "kfold"), model_name=FEATURE_MAP_BACKBONE, image_size=32,
        batch_size=8, stage1_epochs=5, stage2_epochs=0, learning_rate=1e-2, kfold=2,
        export_dir=str(tmp_path / "export"), verbose=0))
    summary, task = kfold.metrics, kfold.task
    assert summary["runs_finished"] == 2 and sum(r["num_test"] for r in summary["runs"]) == 64
    assert summary["refit"]["images"] == 64
    predictor = Predictor(kfold.export_path)  # loaded once for both predict calls
    assert isinstance(predictor.task, ToyAttributeTask)
    evaluated = evaluate_model(kfold.export_path, photos, labels_csv=labels_csv,
                               output_dir=tmp_path / "eval", explain=1)
    files = sorted(photos.glob("*.jpg"))
    scored = predict(predictor, files, probabilities=True)
    with open(labels_csv, newline="") as f:
        raw = {row["filename"]: ToyAttributeTask.raw_label(row) for row in csv.DictReader(f)}
    targets = task.targets([raw[p.name] for p in files], "the CSV")
    expected = task.evaluate(targets, np.array([r["probabilities"] for r in scored]))
    assert evaluated["num_examples"] == 64
    assert evaluated["accuracy"] == pytest.approx(expected["accuracy"])
    assert (tmp_path / "eval" / "eval.json").exists() and evaluated["error_maps"] == {}
    explained = predict(predictor, files[:2], explain_dir=tmp_path / "maps")
    for row in explained:  # the top logit's map: one of the answered values
        [(label, _, name)] = row["overlays"]
        assert label in {f"{a}={row[a]['value']}" for a in ATTRIBUTES}
        assert (tmp_path / "maps" / name).stat().st_size > 0
    audit = audit_dataset(dataset_dir=str(photos), labels_csv=labels_csv, task="toy_attributes",
                          model_name=FEATURE_MAP_BACKBONE, image_size=32,
                          output_dir=str(tmp_path / "audit"))
    assert audit["images"] == 64 and audit["labels"] == task.labels
    assert audit["label_errors"] == [] and any("label errors" in n for n in audit["not_done"])
    pair = audit["near_duplicates"]["pairs"][0]
    assert pair["labels"] == [", ".join(f"{a}={v}" for a, v in raw[f].items() if v)
                              for f in pair["files"]]
    assert (tmp_path / "audit" / "audit.html").exists()


def test_the_toy_task_on_the_web_page(toy_run):
    pytest.importorskip("fastapi", reason="the [app] extra is not installed")
    from fastapi.testclient import TestClient

    from runway_cnn.app.server import create_app

    _, photos, result = toy_run
    photo = sorted(photos.glob("k*_1.jpg"))[2]
    client = TestClient(create_app([result.export_path]))
    answer = client.post("/api/predict", files={"file": (photo.name, photo.read_bytes(),
                                                         "image/jpeg")}).json()
    [(name, prediction)] = answer["predictions"].items()
    expected = Predictor(result.export_path).predict([str(photo)])[0]
    assert prediction == expected
    assert answer["display"][name]["items"] == [
        {"text": f"{a}: {expected[a]['value']}", "score": pytest.approx(expected[a]["score"])}
        for a in ATTRIBUTES]


def test_no_task_name_is_compared_outside_tasks():
    names = set(TASKS.names())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "tasks" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
            elif isinstance(node, ast.match_case):
                sides = [node.pattern]
            else:
                continue
            strings = {n.value for side in sides for n in ast.walk(side)
                       if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            found += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for _ in strings & names][:1]
    assert found == []
