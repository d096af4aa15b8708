"""HubModule: TF-Hub SavedModels as trainable Keras 3 layers (Adam included), and bad handles."""
from __future__ import annotations

import numpy as np
import keras
import pytest
import tensorflow as tf

from runway_cnn.backbones.factory import get_backbone
from runway_cnn.errors import BackboneError
from runway_cnn.backbones.hub import HubModule, clean_variable_name, save_hub_module
from tiny_models import make_tiny_hub_module


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory):
    return make_tiny_hub_module(tmp_path_factory.mktemp("hub") / "tiny")


def _classifier(layer: keras.layers.Layer) -> keras.Model:
    images = keras.Input((32, 32, 3))
    return keras.Model(images, keras.layers.Dense(3)(layer(images)))


def _fit(model, optimizer, epochs=2):
    rng = np.random.default_rng(0)
    x, y = rng.random((24, 32, 32, 3), dtype=np.float32), rng.integers(0, 3, 24)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)


def test_clean_names_keep_layer_boundary():
    assert clean_variable_name("block1_conv/kernel:0") == "block1_conv.kernel"
    assert clean_variable_name("a b/c:1") == "a_b.c"


def test_weights_are_the_modules_own_with_clean_names(tiny_hub):
    layer = HubModule(str(tiny_hub))
    names = [w.name for w in layer.weights]
    assert names[:2] == ["block1_conv.kernel", "block1_conv.bias"]
    assert all(":" not in n and "/" not in n for n in names)
    trainable = {w.name for w in layer.trainable_weights}
    assert "block1_bn.gamma" in trainable and "block1_bn.moving_mean" not in trainable
    # the Keras weight *is* the restored tf.Variable: an assignment reaches the module
    layer.weights[0].assign(np.zeros(layer.weights[0].shape, np.float32))
    assert not np.any(layer._module.variables[0].numpy())


def test_trains_with_adam_and_keeps_batchnorm_statistics(tiny_hub):
    layer = HubModule(str(tiny_hub))
    model = _classifier(layer)
    before = {w.name: w.numpy().copy() for w in layer.weights}
    _fit(model, keras.optimizers.Adam(1e-2))
    changed = {w.name for w in layer.weights if not np.allclose(before[w.name], w.numpy())}
    assert {"block1_conv.kernel", "block2_conv.kernel", "block2_bn.gamma"} <= changed
    assert not any("moving" in name for name in changed)


def test_training_argument_is_honoured_when_batchnorm_not_frozen(tiny_hub):
    layer = HubModule(str(tiny_hub), freeze_batchnorm=False)
    model = _classifier(layer)
    before = {w.name: w.numpy().copy() for w in layer.weights}
    _fit(model, keras.optimizers.SGD(1e-2), epochs=1)
    changed = {w.name for w in layer.weights if not np.allclose(before[w.name], w.numpy())}
    assert "block1_bn.moving_mean" in changed


def test_frozen_layer_does_not_train(tiny_hub):
    layer = HubModule(str(tiny_hub), trainable=False)
    model = _classifier(layer)
    before = [w.numpy().copy() for w in layer.weights]
    _fit(model, keras.optimizers.Adam(1e-2), epochs=1)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, layer.weights))


def test_backbone_from_local_handle(tiny_hub):
    backbone = get_backbone(f"hub:{tiny_hub}", image_size=32)
    assert backbone.feature_dim == 16
    assert backbone.preprocessing.image_size == 32
    out = backbone.model(np.zeros((2, 32, 32, 3), np.float32))
    assert tuple(out.shape) == (2, 16)


def test_a_local_handle_does_not_need_tensorflow_hub(tiny_hub, monkeypatch):
    # tensorflow_hub's import needs setuptools' pkg_resources, which setuptools 81+ removed (and
    # which installing torch upgraded away here): offline local modules must load without it
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow_hub", None)  # any import of it now fails
    backbone = get_backbone(f"hub:{tiny_hub}", image_size=32)
    assert backbone.model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, backbone.feature_dim)


def test_missing_handle_is_a_clear_error(tmp_path):
    with pytest.raises(BackboneError, match="no such directory"):
        get_backbone(f"hub:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="not a SavedModel"):
        get_backbone(f"hub:{tmp_path / 'empty'}")


def test_an_unpooled_module_is_a_backbone_with_a_feature_map(tmp_path):
    """A module that returns a feature map is pooled by the head (average or max); one that
    returns neither a map nor a vector is a clear error."""
    images = keras.Input((None, None, 3))
    conv = keras.Model(images, keras.layers.Conv2D(4, 3)(images))
    save_hub_module(conv, str(tmp_path / "unpooled"))
    backbone = get_backbone(f"hub:{tmp_path / 'unpooled'}", image_size=32)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    feature_map = np.asarray(backbone.feature_map(x))
    assert backbone.feature_dim == 4 and feature_map.shape == (2, 30, 30, 4)
    np.testing.assert_allclose(np.asarray(backbone.model(x)), feature_map.mean(axis=(1, 2)),
                               atol=1e-5)
    flat = keras.Model(images, keras.layers.Reshape((-1, 4))(keras.layers.Conv2D(4, 3)(images)))
    save_hub_module(flat, str(tmp_path / "rank3"))
    with pytest.raises(BackboneError, match="no pooled feature-vector output"):
        get_backbone(f"hub:{tmp_path / 'rank3'}", image_size=32)


def test_wrong_input_rank_is_a_clear_error(tmp_path):
    vectors = keras.Input((5,))
    dense = keras.Model(vectors, keras.layers.Dense(4)(vectors))
    root = tf.Module()
    root.f = tf.function(lambda x: dense(x), input_signature=[tf.TensorSpec([None, 5])])
    root.dense = dense
    tf.saved_model.save(root, str(tmp_path / "vectors"))
    with pytest.raises(BackboneError, match="is not callable|does not take"):
        get_backbone(f"hub:{tmp_path / 'vectors'}", image_size=32)


def test_hub_registry_entries_take_a_handle_as_weights_but_not_none(tiny_hub):
    with pytest.raises(BackboneError, match="comes with its weights"):
        get_backbone("efficientnet_lite0", weights=None)
    backbone = get_backbone("efficientnet_lite0", weights=str(tiny_hub), image_size=32)
    assert backbone.feature_dim == 16  # the given module replaced the entry's own
