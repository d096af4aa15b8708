"""Domain pre-training chains (``--model_name run:``): a run starts from another run's backbone — of
any task — with its weights exact and its head dropped; chains of any length record themselves
in ``metrics.json``; a start that is not a run is a one-line error."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import make_image_folder
from helpers import assert_one_line_error, run_cli
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.features import extract_features
from runway_cnn import finetune as finetune_cli
from runway_cnn.inference.batch import read_image
from runway_cnn.inference.predictor import Predictor
from runway_cnn.train_dir import TrainDir
from runway_cnn.training.trainer import FineTuner


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """ImageNet stand-in (the tiny hub module) → 4 garment classes (stage 2 trains the whole
    backbone at a high rate and is not kept) → 2 other classes, as a chain of runs."""
    root = tmp_path_factory.mktemp("chain")
    hub = make_tiny_hub_module(root / "hub")
    first_data = make_image_folder(root / "first", 4, per_class=8, size=(40, 56), seed=0)
    second_data = make_image_folder(root / "second", ("a", "b"), per_class=8, size=(40, 56),
                                    seed=5)
    common = dict(image_size=32, batch_size=8, verbose=0)
    first = fine_tune(FinetuneConfig(dataset_dir=str(first_data), train_dir=str(root / "r1"),
                                     model_name=f"hub:{hub}", stage2_epochs=1, unfreeze="all",
                                     stage2_learning_rate=0.05, **common))
    second = fine_tune(FinetuneConfig(dataset_dir=str(second_data), train_dir=str(root / "r2"),
                                      model_name=f"run:{first.export_path}", stage2_epochs=0,
                                      **common))
    return root, hub, first, second, second_data, common


def test_the_backbone_is_carried_exactly_and_the_head_starts_afresh(chain, tmp_path):
    root, hub, first, _, second_data, common = chain
    stage1, stage2 = first.metrics["stages"]["stage1"], first.metrics["stages"]["stage2"]
    with TrainDir(first.train_dir).stage("stage2").history.open() as f:
        logged = [float(row["val_top1"]) for row in csv.DictReader(f)]
    assert stage2["best_val_top1"] == max(logged)
    assert stage2["improved_on_stage1"] == (max(logged) > stage2["stage1_val_top1"])
    # Stage 1 already gets every validation image right (seeded, deterministic ops), which
    # stage 2 cannot beat, so stage 2 is not kept and stage 1's weights stay.
    assert stage2["stage1_val_top1"] == stage1["validation"]["top1"] == 1.0
    assert stage2["improved_on_stage1"] is False and stage2["validation_gain"] == 0.0
    assert stage2["validation"] == stage1["validation"]
    tuner = FineTuner(FinetuneConfig(dataset_dir=str(second_data), train_dir=str(tmp_path / "t"),
                                     model_name=f"run:{first.train_dir}", **common))
    paths = tuner.dataset.splits["train"].paths
    predictor = Predictor(first.export_path)
    crops = np.stack([predictor.crop(read_image(p)) for p in paths[:4]])
    np.testing.assert_allclose(np.asarray(tuner.backbone.model(crops)),
                               np.asarray(predictor.model.feature_vector(crops)), atol=1e-6)
    np.testing.assert_allclose(extract_features(tuner.backbone, paths, 8),
                               extract_features(first.backbone, paths, 8), atol=1e-5)
    kernel = tuner.head.get_layer("logits").kernel.numpy()
    assert kernel.shape[1] == 2 and first.model.get_layer("head").get_layer(
        "logits").kernel.shape[1] == 4  # another task's head: dropped, not reused
    fresh = FineTuner(FinetuneConfig(dataset_dir=str(second_data), train_dir=str(tmp_path / "u"),
                                     model_name=f"hub:{hub}", **common))
    np.testing.assert_array_equal(kernel, fresh.head.get_layer("logits").kernel.numpy())


def test_chains_of_any_length_are_recorded(chain, tmp_path):
    root, hub, first, second, second_data, common = chain
    assert first.metrics["chain"] == [f"hub:{hub}"]
    assert second.metrics["chain"] == [f"hub:{hub}", f"run:{first.export_path}"]
    third = fine_tune(FinetuneConfig(dataset_dir=str(second_data), train_dir=str(tmp_path / "r3"),
                                     model_name=f"run:{second.train_dir}", stage2_epochs=0,
                                     **common))
    assert third.metrics["chain"] == [f"hub:{hub}", f"run:{first.export_path}",
                                      f"run:{second.export_path}"]
    assert third.metrics["test"]["top1"] >= 0.5


def test_a_start_that_is_not_a_run_is_a_one_line_error(chain, tmp_path):
    root, hub, first, _, second_data, _ = chain
    base = ["--dataset_dir", str(second_data), "--image_size", "32"]
    for start, named in ((tmp_path / "missing", "missing"), (hub, str(hub)),
                         (first.export_path / "variables", "variables")):
        code, _, stderr = run_cli(finetune_cli.main, base + [
            "--model_name", f"run:{start}", "--train_dir", str(tmp_path / f"t{len(str(start))}")])
        assert_one_line_error(code, stderr, named)
