"""Regression (``--task regression``): a price per photo read from a CSV column, stage 1 solved as
ridge regression, stage 2 with the Huber loss, exported, served, predicted and evaluated end to
end on test-made photos; the head against scikit-learn; the task's flags."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import make_image
from fastapi.testclient import TestClient
from sklearn.linear_model import Ridge
from helpers import (assert_one_line_error, assert_refit_on_every_split, headless_browser,
                     predict_csv_rows, run_cli, serving, tiny_csv_run)
from tiny_models import make_tiny_hub_module

from runway_cnn.app.server import create_app
from runway_cnn import finetune as finetune_cli
from runway_cnn.inference.evaluation import evaluate_model
from runway_cnn.inference.batch import predict
from runway_cnn.inference.predictor import Predictor
from runway_cnn.tasks import RegressionTask, task_from_config
from runway_cnn.tasks.regression.task import ALPHA_GRID
from runway_cnn.tasks.heads import feature_scale

PRICE = {0: 100.0, 1: 110.0, 2: 120.0, 3: 130.0}  # a photo's price follows its pattern


def write_priced_photos(root, per_kind: int = 12, column: str = "value"):
    """``root/photos/*.jpg`` of 4 patterns and ``root/prices.csv`` (``filename``, ``column``):
    the pattern's price plus noise, and two rows whose cell is not a usable number."""
    photos = root / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for kind in range(4):
        for i in range(per_kind):
            name = f"k{kind}_{i}.jpg"
            make_image(kind, (48, 48), rng).save(photos / name, quality=90)
            rows.append((name, f"{PRICE[kind] + rng.normal():.3f}"))
    make_image(0, (48, 48), rng).save(photos / "no_price.jpg")
    make_image(1, (48, 48), rng).save(photos / "infinite.jpg")
    rows += [("no_price.jpg", "about 100"), ("infinite.jpg", "inf")]
    with (root / "prices.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", column])
        writer.writerows(rows)
    return photos, root / "prices.csv"


@pytest.fixture(scope="module")
def price_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    photos, prices = write_priced_photos(root)
    result = tiny_csv_run(photos, prices, "regression", root / "run",
                          make_tiny_hub_module(root / "hub"), stage2_epochs=1)
    return root, photos, prices, result


def _truth(prices) -> dict[str, float]:
    with open(prices, newline="") as f:
        return {row["filename"]: float(row["value"]) for row in csv.DictReader(f)
                if row["filename"].startswith("k")}


def test_prices_train_export_serve_predict_and_evaluate(price_run, tmp_path):
    root, photos, prices, result = price_run
    assert result.task.labels == ["value"]
    report = json.loads((result.train_dir / "data_report.json").read_text())
    bad = json.dumps(report)
    assert "no_price.jpg" in bad and "infinite.jpg" in bad  # counted, named, not trained on
    stage1 = result.metrics["stages"]["stage1"]["solver"]
    assert stage1["solver"] == "ridge" and stage1["alpha"] in ALPHA_GRID
    assert "improved_on_stage1" in result.metrics["stages"]["stage2"]  # stage 2 ran (Huber)
    test = result.metrics["test"]
    # the photos' price follows their pattern: the model is far better than the mean
    assert test["mae"] < 0.5 * test["baseline_mae"] and test["r2"] > 0.5
    assert test["num_examples"] == 12

    truth = _truth(prices)
    names = sorted(truth)[:8]
    predictor = Predictor(result.export_path)
    answers = predictor.predict([str(photos / n) for n in names])
    assert all(set(a) == {"value"} and isinstance(a["value"], float) for a in answers)
    rows = predict_csv_rows(result.export_path, [photos / n for n in names], tmp_path / "p.csv")
    # predict crops in Python, the signature in the graph: resizing differs by ~1e-4 relative
    np.testing.assert_allclose([float(r["value"]) for r in rows],
                               [a["value"] for a in answers], rtol=2e-3)
    with TestClient(create_app([str(result.export_path)])) as client:
        posted = client.post("/api/predict", files={
            "file": (names[0], (photos / names[0]).read_bytes(), "image/jpeg")}).json()
    assert list(posted["predictions"].values()) == [answers[0]]

    figures = evaluate_model(result.export_path, photos, labels_csv=prices,
                             output_dir=tmp_path / "eval")
    everything = sorted(truth)
    values = np.array([r["value"] for r in predict(predictor, [photos / n for n in everything])])
    expected = np.abs(values - np.array([truth[n] for n in everything])).mean()
    assert figures["mae"] == pytest.approx(expected, rel=1e-4)
    assert figures["num_examples"] == len(everything)
    assert (tmp_path / "eval" / "predicted_vs_true.png").stat().st_size > 0


def test_the_ridge_head_predicts_what_scikit_learn_predicts():
    rng = np.random.default_rng(1)
    features, val_features = rng.normal(size=(60, 16)), rng.normal(size=(20, 16))
    weights = rng.normal(size=16)
    targets = (features @ weights * 30 + 500 + rng.normal(size=60)).reshape(-1, 1)
    val_targets = (val_features @ weights * 30 + 500).reshape(-1, 1)
    task = RegressionTask(["price"])
    task.prepare(targets)
    head = task.build_head(16)
    chosen = task.fit_head_convex(head, features, targets, val_features, val_targets)

    mean, scale = feature_scale(features)
    z = (targets[:, 0] - targets.mean()) / targets.std()
    rmse = {a: np.sqrt(np.mean((Ridge(alpha=a).fit((features - mean) / scale, z).predict(
        (val_features - mean) / scale) * targets.std() + targets.mean() - val_targets[:, 0]) ** 2))
        for a in ALPHA_GRID}
    best = min(rmse, key=rmse.get)
    assert chosen["alpha"] == best
    reference = Ridge(alpha=best).fit((features - mean) / scale, z).predict(
        (val_features - mean) / scale) * targets.std() + targets.mean()
    predicted = head(val_features.astype("float32"), training=False).numpy()[:, 0]
    np.testing.assert_allclose(predicted, reference, rtol=1e-4, atol=1e-3)
    rebuilt = task_from_config(json.loads(json.dumps(task.config())))
    assert (rebuilt.mean, rebuilt.std) == (task.mean, task.std)
    d = task.std  # Huber: squared within one standard deviation, linear beyond
    loss = float(rebuilt.loss()(np.zeros((1, 1)), np.full((1, 1), 3 * d)))
    assert loss == pytest.approx(0.5 * d ** 2 + d * (3 * d - d), rel=1e-5)


def test_another_column_is_read_with_target_column_and_bad_flags_are_one_line(tmp_path):
    photos, prices = write_priced_photos(tmp_path, per_kind=3, column="price")
    task = RegressionTask(["price"], target_column="price")
    read, columns = task.csv_reader(**task.options)
    assert columns == ("price",) and read({"filename": "a.jpg", "price": " 12.5 "}) == 12.5
    for cell in ("", "cheap", "nan", "-inf"):
        with pytest.raises(ValueError, match="price"):
            read({"filename": "a.jpg", "price": cell})
    common = ["--dataset_dir", str(photos), "--labels_csv", str(prices), "--task", "regression",
              "--train_dir", str(tmp_path / "run"), "--stage2_epochs", "0"]
    code, _, err = run_cli(finetune_cli.main, common)  # no 'value' column
    assert_one_line_error(code, err, "value")
    code, _, err = run_cli(finetune_cli.main, [*common, "--head", "mlgcn"])
    assert_one_line_error(code, err, "--head", "regression")
    code, _, err = run_cli(finetune_cli.main, [*common, "--loss", "bce"])
    assert_one_line_error(code, err, "--loss", "bce")
    config = finetune_cli.parse_args([*common, "--target_column", "price", "--loss", "mse"])
    assert config.task_options == {"target_column": "price", "loss": "mse"}
    assert config.to_dict()["target_column"] == "price"


def test_the_web_page_shows_a_photos_price(price_run):
    root, photos, _, result = price_run
    photo = photos / "k2_3.jpg"
    value = Predictor(result.export_path).predict([str(photo)])[0]["value"]
    with serving(create_app([str(result.export_path)])) as url, headless_browser() as browser:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.ID, "status").text == photo.name)
        assert f"value: {value:.3f}" in browser.find_element(By.ID, "answers").text
        assert browser.find_element(By.ID, "error").text == ""


def test_the_export_is_refit_on_every_split_with_validations_choices(price_run):
    *_, result = price_run
    assert_refit_on_every_split(result)


def test_a_value_is_a_plain_number_the_float32_model_can_hold():
    from runway_cnn.tasks.regression.task import parse_value

    assert [parse_value(text, "price") for text in ("12", "-2.5e3", ".5", "7.", " 3 ")] == \
        [12.0, -2500.0, 0.5, 7.0, 3.0]
    for text, why in (("1_000", "is not a number"), ("١٢", "is not a number"),
                      ("0x10", "is not a number"), ("nan", "is not a finite number"),
                      ("1e308", "beyond float32's range"), ("-4e38", "beyond float32's range")):
        with pytest.raises(ValueError, match=why):
            parse_value(text, "price")


def _regression_rows(prefix: str, r2: list) -> list[dict]:
    """done.json rows of regression runs (as an experiment's runs write them)."""
    return [{"run": f"{prefix}split_{i:02d}", "seed": i, "num_train": 8, "num_validation": 2,
             "num_test": 2, "mae": 1.0 + i, "rmse": 1.5 + i, "r2": value, "baseline_mae": 3.0,
             "baseline_rmse": 4.0, "validation_rmse": 1.2, "stage1_seconds": 1.0,
             "stage2_seconds": 0.0, "run_seconds": 2.0, "test": {}}
            for i, value in enumerate(r2)]


def test_an_experiments_summary_and_box_plot_use_the_regressions_own_figures(tmp_path):
    """--num_splits (and --compare_random_split) on a regression: the box plot draws the
    monitored figure (RMSE; it wanted single-label's top1); a run without R² (a test split of one
    value) is left out of R²'s statistics."""
    from runway_cnn import FinetuneConfig
    from runway_cnn.training.experiments import (RunPlan, compare_random, format_summary,
                                                 summarise, write_summary)

    task = RegressionTask(["value"])
    config = FinetuneConfig(dataset_dir=str(tmp_path), num_splits=2, task="regression")
    plans = [RunPlan(f"split_{i:02d}", i, {}) for i in range(2)]
    rows, random_rows = _regression_rows("", [0.5, None]), _regression_rows("random_", [0.7, 0.9])
    summary = summarise(rows, plans, config, task)
    summary["random_split"] = compare_random(summary, summarise(random_rows, plans, config, task),
                                             task)
    write_summary(summary, tmp_path, task, rows)
    assert (tmp_path / "split_accuracy.png").stat().st_size > 1000
    assert summary["monitored_figure"] == "rmse"
    assert summary["aggregate"]["r2"] == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}
    assert summary["random_split"]["gap"]["r2"] == pytest.approx(0.3)
    text = format_summary(summary)
    assert "rmse" in text and "r2" in text and "random split +0.300" in text
    summary["aggregate"]["r2"] = dict.fromkeys(("mean", "std", "min", "max"))
    assert " r2 " not in format_summary(summary)  # no run has R²: not a line of n/a


def test_a_constant_target_is_refused_before_training_and_its_r2_is_undefined(tmp_path):
    """Every photo at one price: nothing to learn, a one-line error naming the CSV, the column
    and the value; R² of a test split of one value is None with the reason (scikit-learn says
    1.0 for a perfect prediction, 0.0 otherwise)."""
    from runway_cnn.tasks.regression import evaluation

    photos, prices = write_priced_photos(tmp_path, per_kind=3, column="price")
    lines = prices.read_text().splitlines()
    prices.write_text("\n".join([lines[0]] + [line.split(",")[0] + ",100" for line in lines[1:]]))
    code, _, err = run_cli(finetune_cli.main, [
        "--dataset_dir", str(photos), "--labels_csv", str(prices), "--task", "regression",
        "--target_column", "price", "--train_dir", str(tmp_path / "run")])
    assert_one_line_error(code, err, str(prices), "'price'", "100", "nothing to learn")
    assert not (tmp_path / "run" / "stage1").exists()

    same = np.full((4, 1), 100.0)
    for predicted in (same, same + [[1.0], [-1.0], [2.0], [0.0]]):
        figures = evaluation.figures(same, predicted, training_mean=100.0)
        assert figures["r2"] is None and "every target is 100" in figures["r2_undefined"]
        assert "R² undefined (every target is 100" in evaluation.headline(figures)
    spread = evaluation.figures(np.array([[1.0], [2.0]]), np.array([[1.0], [2.0]]), 1.5)
    assert spread["r2"] == 1.0 and "r2_undefined" not in spread


def test_values_come_from_a_csv_never_from_folder_names(tmp_path):
    """Class folders carry no numbers: training a regression on them, or evaluating a
    regression model on them (folders named 100/, 200/ would pass as prices), is one line
    saying the CSV and column it needs."""
    from conftest import make_image_folder

    from runway_cnn.data.folders import scan_image_folder
    from runway_cnn.errors import DataError
    from runway_cnn.inference.evaluation import evaluation_images

    folder = make_image_folder(tmp_path / "classes", ["100", "200"], per_class=4, size=(24, 32))
    code, _, err = run_cli(finetune_cli.main, [
        "--dataset_dir", str(folder), "--task", "regression", "--train_dir", str(tmp_path / "r")])
    assert_one_line_error(code, err, "--labels_csv", "'value' column")
    assert "labels" not in err.replace("--labels_csv", "")  # not "not 2 labels"
    with pytest.raises(DataError, match="--labels_csv with a 'price' column") as error:
        evaluation_images(folder, task=RegressionTask(["price"], target_column="price"))
    assert "\n" not in str(error.value)
    assert len(scan_image_folder(folder, make_splits=False).pooled()) == 8  # the folder is fine
