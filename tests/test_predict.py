"""``runway_cnn.predict``: a CSV row per input file, broken files included, equal to the trained
model's predictions; the CLI with its progress bar."""
from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.errors import RunwayError
from runway_cnn.data.pipeline import eval_crops
from runway_cnn.inference.batch import predict
from conftest import make_image_folder
from tiny_models import make_tiny_hub_module

CLASSES = ("checks", "circles", "hstripes", "vstripes")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    dataset = make_image_folder(root / "looks", CLASSES, per_class=6, size=(40, 72))
    config = FinetuneConfig(dataset_dir=str(dataset), train_dir=str(root / "run"),
                            model_name=f"hub:{make_tiny_hub_module(root / 'hub')}", image_size=32,
                            batch_size=8, stage1_epochs=2, stage2_epochs=0,
                            validation_fraction=0.25, test_fraction=0.25, verbose=0)
    return root, dataset, fine_tune(config)


@pytest.fixture(scope="module")
def inputs(trained):
    """A folder of 3 good photos (one of them RGBA, read through PIL), 3 broken files and a text
    file that is not an image file by name; plus a missing file named on the command line."""
    root, dataset, _ = trained
    folder = root / "inbox"
    folder.mkdir()
    for i, src in enumerate(sorted(dataset.rglob("*.jpg"))[:2]):
        (folder / f"a{i}.jpg").write_bytes(src.read_bytes())
    Image.open(sorted(dataset.rglob("*.jpg"))[-1]).convert("RGBA").save(folder / "c.png")
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    good = (folder / "a0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image file")
    return folder, [str(folder), str(root / "missing.jpg")]


def test_a_row_per_input_with_errors_for_broken_files(trained, inputs):
    folder, args = inputs
    rows = predict(trained[2].export_path, args, top_k=3, batch_size=2)
    names = [r["path"].rsplit("/", 1)[-1] for r in rows]
    assert names == ["a0.jpg", "a1.jpg", "broken.jpg", "c.png", "empty.png", "truncated.jpg",
                     "missing.jpg"]
    errors = {name: r["error"] for name, r in zip(names, rows)}
    assert {n for n, e in errors.items() if e} == {"broken.jpg", "empty.png", "truncated.jpg",
                                                   "missing.jpg"}
    assert errors["missing.jpg"] == "no such file"
    for row in rows:
        assert len(row["labels"]) == (0 if row["error"] else 3)
        assert row["scores"] == sorted(row["scores"], reverse=True)


def test_predictions_are_the_models(trained, inputs):
    _, _, run = trained
    folder, _ = inputs
    files = [str(folder / "a0.jpg"), str(folder / "a1.jpg")]
    rows = predict(run.train_dir, files, top_k=10)
    expected = run.task.probabilities(run.model.predict(
        eval_crops(files, run.backbone.preprocessing, 8), verbose=0))
    for row, p in zip(rows, expected):
        assert row["labels"] == [CLASSES[i] for i in np.argsort(-p)]  # top_k capped at 4
        np.testing.assert_allclose(row["scores"], np.sort(p)[::-1], atol=1e-5)
    with pytest.raises(RunwayError, match="no image files"):
        predict(run.train_dir, [str(folder.parent / "run" / "stage1")])


def test_cli_writes_the_csv_and_shows_progress(trained, inputs, tmp_path):
    _, _, run = trained
    _, args = inputs
    out = subprocess.run([sys.executable, "-m", "runway_cnn.predict", "--model",
                          str(run.export_path), *args, "--top_k", "2", "--batch_size", "2",
                          "--output", str(tmp_path / "preds.csv")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "preds.csv").open()))
    assert list(rows[0]) == ["path", "label_1", "score_1", "label_2", "score_2", "error"]
    assert len(rows) == 7 and sum(bool(r["error"]) for r in rows) == 4
    assert all(r["label_1"] in CLASSES for r in rows if not r["error"])
    assert "7/7" in out.stderr and "4 unreadable" in out.stderr
