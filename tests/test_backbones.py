"""The backbone registry: names, Keras applications offline, preprocessing, clear errors."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from runway_cnn.backbones.factory import BACKBONES, get_backbone
from runway_cnn.errors import BackboneError, UnknownNameError
from runway_cnn.data.preprocessing import Normalization, Normalize

REQUIRED = ["inception_v3", "efficientnet_v2_s", "mobilenet_v2", "mobilenet_v3_large", "resnet50",
            "inception_v1", "inception_v3_hub", "efficientnet_lite0"] + [
                f"efficientnet_b{i}" for i in range(8)]


def test_registry_has_the_papers_and_common_backbones():
    assert set(REQUIRED) <= set(BACKBONES.names())
    assert BACKBONES.get("inception_v3").image_size == 299
    assert BACKBONES.get("efficientnet_lite0").image_size == 224


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown backbone 'vgg99'.*mobilenet_v2"):
        get_backbone("vgg99")


def test_keras_application_without_weights_builds_offline():
    backbone = get_backbone("mobilenet_v2", weights=None, image_size=96)
    assert backbone.feature_dim == 1280
    assert backbone.preprocessing.image_size == 96
    assert backbone.preprocessing.normalization == BACKBONES.get("mobilenet_v2").normalization
    out = backbone.model(np.random.rand(2, 96, 96, 3).astype("float32"))
    assert tuple(out.shape) == (2, 1280)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="weights file .*not found"):
        get_backbone("mobilenet_v2", weights=str(tmp_path / "missing.h5"), image_size=96)


def test_exactly_one_source():
    with pytest.raises(BackboneError, match="exactly one"):
        get_backbone("mobilenet_v2", hub_handle="x")


def test_normalize_layer_maps_unit_range_and_round_trips():
    layer = Normalization(scale=255.0, mean=(103.939, 116.779, 123.68), bgr=True).layer()
    x = np.array([[[[1.0, 0.5, 0.0]]]], np.float32)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y[0, 0, 0], [0 - 103.939, 127.5 - 116.779, 255 - 123.68],
                               rtol=1e-5)
    clone = Normalize.from_config(layer.get_config())
    np.testing.assert_allclose(np.asarray(clone(x)), y)
    assert keras.saving.get_registered_object("runway_cnn>Normalize") is Normalize


def test_the_feature_map_and_both_poolings_share_the_backbones_weights():
    backbone = get_backbone("mobilenet_v2", weights=None, image_size=64)
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype("float32")
    feature_map = np.asarray(backbone.feature_map(images, training=False))
    assert feature_map.shape == (2, 2, 2, 1280)
    np.testing.assert_allclose(np.asarray(backbone.model(images, training=False)),
                               feature_map.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(backbone.pooled("max")(images, training=False)),
                               feature_map.max(axis=(1, 2)), atol=1e-6)
    assert {id(w) for w in backbone.pooled("max").weights} == {id(w) for w in
                                                              backbone.model.weights}
    with pytest.raises(BackboneError, match="--pooling 'sum'"):
        backbone.pooled("sum")


def test_a_pooled_only_backbone_refuses_max_pooling(tmp_path):
    from tiny_models import make_tiny_hub_module

    backbone = get_backbone(f"hub:{make_tiny_hub_module(tmp_path / 'hub')}",
                            image_size=32)
    assert backbone.feature_map is None
    with pytest.raises(BackboneError, match="pooled features only.*--pooling avg"):
        backbone.pooled("max")


def test_max_pooling_trains_and_exports_end_to_end(tmp_path):
    from conftest import make_image_folder
    from runway_cnn import FinetuneConfig, fine_tune
    from runway_cnn.inference.predictor import Predictor

    dataset = make_image_folder(tmp_path / "looks", per_class=6, size=(40, 64))
    result = fine_tune(FinetuneConfig(
        dataset_dir=str(dataset), train_dir=str(tmp_path / "run"), model_name="mobilenet_v2",
        weights="none", image_size=32, pooling="max", validation_fraction=0.25,
        test_fraction=0.25, stage2_epochs=0, verbose=0))
    images = np.random.default_rng(1).uniform(size=(3, 32, 32, 3)).astype("float32")
    features = np.asarray(result.backbone.pooled("max")(images, training=False))
    head = result.task.probabilities(np.asarray(result.model.get_layer("head")(features)))
    np.testing.assert_allclose(Predictor(result.export_path).probabilities(images), head,
                               atol=1e-5)
