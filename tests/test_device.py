"""The GPU settings on this CPU: ``--jit_compile on`` really trains through XLA (op determinism
does not silently switch it off), the run records what Keras compiled, ``--mixed_precision on``
exports float32 probabilities that a float32 re-export reproduces, and XLA-off runs stay
deterministic."""
from __future__ import annotations

import contextlib
import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_image_folder
from tensorflow.python.framework import config as tf_config
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.data.pipeline import eval_crops
from runway_cnn.export.reexport import reexport
from runway_cnn.training.device import configure_device, note_compiled
from runway_cnn.training.restore import restore_run, run_split
from runway_cnn.training.trainer import FineTuner


@pytest.fixture(scope="module", autouse=True)
def process_settings_put_back():
    """These tests switch XLA, mixed precision and op determinism, which are process-wide: the
    modules after this one find them as they were."""
    policy, deterministic = keras.mixed_precision.global_policy(), \
        tf_config.is_op_determinism_enabled()
    yield
    keras.mixed_precision.set_global_policy(policy)
    (tf_config.enable_op_determinism if deterministic else tf_config.disable_op_determinism)()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """32 photos (16 train, 8 validation, 8 test: every batch of 8 full, so XLA compiles each
    step once) and the tiny TF-Hub backbone."""
    root = tmp_path_factory.mktemp("device")
    dataset = make_image_folder(root / "looks", per_class=8, size=(40, 56))
    return root, dataset, make_tiny_hub_module(root / "hub")


def _config(workspace, name, **overrides) -> FinetuneConfig:
    root, dataset, hub = workspace
    settings = dict(dataset_dir=str(dataset), train_dir=str(root / name), model_name=f"hub:{hub}",
                    image_size=32, batch_size=8, stage1_solver="adam", stage1_epochs=3,
                    stage2_epochs=1, learning_rate=1e-2, validation_fraction=0.25,
                    test_fraction=0.25, verbose=0)
    return FinetuneConfig(**{**settings, **overrides})


def _train_step(model: keras.Model):
    """The ``tf.function`` Keras' last ``fit`` of ``model`` ran each step through (its
    ``one_step_on_data``, inside ``model.train_function``)."""
    function = model.train_function
    cells = dict(zip(function.__code__.co_freevars,
                     (cell.cell_contents for cell in function.__closure__)))
    return cells["one_step_on_data"].__wrapped__


def _ran_through_xla(model: keras.Model) -> bool:
    """Whether the train step ran, and as XLA: every graph traced for it carries
    ``_XlaMustCompile``, which TensorFlow runs only as one XLA cluster (or fails)."""
    step = _train_step(model)
    traced = step._list_all_concrete_functions()
    assert step.experimental_get_tracing_count() >= 1 and traced  # the step did run
    marks = {f.function_def.attr["_XlaMustCompile"].b for f in traced}
    assert len(marks) == 1
    return marks.pop()


@pytest.fixture(scope="module")
def xla_run(workspace):
    """A run with ``--jit_compile on --mixed_precision on`` (both stages train with Keras), as it
    printed."""
    printed, compiled = io.StringIO(), []
    compile_model = FineTuner._compile

    def recording(self, model, learning_rate, *stage):
        compiled.append(model)
        return compile_model(self, model, learning_rate, *stage)

    with contextlib.redirect_stdout(printed), pytest.MonkeyPatch.context() as patch:
        patch.setattr(FineTuner, "_compile", recording)
        result = fine_tune(_config(workspace, "xla", jit_compile="on", mixed_precision="on",
                                   stage1_epochs=20, learning_rate=5e-2))
    result.stage2_model = compiled[1]  # the model stage 2 trained (any image size), compiled
    # after stage 1's head and before the refit's
    return result, printed.getvalue()


def test_xla_and_mixed_precision_train_end_to_end_and_say_what_keras_compiled(xla_run):
    result, printed = xla_run
    assert _ran_through_xla(result.stage2_model)  # stage 2's train step, TF-Hub backbone included
    metrics = json.loads((result.train_dir / "metrics.json").read_text())
    device = metrics["device"]
    # the refit trains the Adam head again unless stage 2 was kept (then no convex head to refit)
    refit = ["refit"] if metrics["refit"]["refit"] else []
    asked = device["asked"]
    assert (asked["jit_compile"], asked["mixed_precision"], asked["op_determinism"]) == \
        (True, True, False)
    assert "not bit-deterministic" in asked["summary"]
    assert set(device["compiled"]) == {"stage1", "stage2", *refit}
    for stage, record in device["compiled"].items():
        assert record["jit_compile"] and record["xla"].startswith("on (Keras kept it"), stage
        assert record["dtype_policy"] == "mixed_float16" and record["loss_scaling"], stage
        assert record["output_dtypes"] == ["float32"], stage
    assert device["compiled"]["stage1"]["model"] == "head"
    # the TF-Hub module computes in float32 under any policy; the head's logits layer too
    assert device["compiled"]["stage2"]["compute_dtypes"] == {"backbone": ["float32"],
                                                              "head": ["float32"]}
    lines = [line for line in printed.splitlines() if " compiled: " in line]
    assert [line.split(" compiled: ")[0] for line in lines] == ["stage 1", "stage 2", *refit]
    assert all(line.split(" compiled: ")[1].startswith("XLA on (Keras kept it") for line in lines)
    assert "not bit-deterministic (XLA)" in printed


def test_xla_on_turns_off_op_determinism_an_earlier_run_left_on():
    tf_config.enable_op_determinism()  # as a CPU run without XLA leaves it
    settings = configure_device("on", "off", seed=0)
    assert not tf_config.is_op_determinism_enabled() and not settings.deterministic
    assert "not bit-deterministic" in settings.describe()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse", jit_compile=True)
    assert model.jit_compile  # Keras keeps XLA only with op determinism off
    again = configure_device("off", "off", seed=0)
    assert tf_config.is_op_determinism_enabled() and again.deterministic
    assert "deterministic ops" in again.describe()


def _tiny_model(*layers) -> keras.Model:
    inputs = keras.Input((3,))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="tiny")


def test_the_record_says_when_keras_refuses_xla(capsys):
    settings = configure_device("on", "off", seed=0)
    tf_config.enable_op_determinism()  # switched on behind the run's back
    model = _tiny_model()
    with pytest.warns(UserWarning, match="jit_compile"):
        model.compile("adam", "mse", jit_compile=True)
    record = note_compiled(model, settings, _tiny_model())
    assert not record["jit_compile"]
    assert record["xla"] == "off (asked on; Keras turned it off: op determinism is on)"
    assert "stage 1 compiled: XLA off (asked on; Keras turned it off" in capsys.readouterr().out


class NoXlaKernel(keras.layers.Layer):
    """Adds 0 through ``AsString``, an op XLA has no kernel for (as some TF-Hub modules have)."""

    def call(self, x):
        text = tf.strings.as_string(x)
        return x + 0.0 * tf.cast(tf.strings.length(text), x.dtype)


def test_a_model_xla_cannot_compile_trains_without_it_and_says_so(capsys):
    settings = configure_device("on", "off", seed=0)
    model = _tiny_model(NoXlaKernel())
    model.compile("adam", "mse", jit_compile=True)
    assert model.jit_compile  # Keras cannot tell: fit would fail on the op
    record = note_compiled(model, settings, _tiny_model())
    assert not model.jit_compile and not record["jit_compile"]
    assert record["xla"].startswith("off (asked on; this model does not compile under XLA")
    assert "AsString" in record["xla"]
    assert "does not compile under XLA" in capsys.readouterr().out
    model.fit(np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32"), verbose=0)
    assert not _ran_through_xla(model)


def test_without_xla_ops_are_deterministic_and_the_same_seed_gives_the_same_stage2(workspace):
    weights = []
    for name in ("seed_a", "seed_b"):
        tuner = FineTuner(_config(workspace, name, jit_compile="off", mixed_precision="off",
                                  stage1_solver="lbfgs", stage2_learning_rate=1e-2))
        assert tf_config.is_op_determinism_enabled() and tuner.device.deterministic
        tuner.stage1()
        start = [w.numpy() for w in tuner.backbone.model.weights]
        assert tuner.stage2(baseline=-1.0)["improved_on_stage1"]  # any result beats -1: kept
        assert not all(np.array_equal(a, w.numpy())
                       for a, w in zip(start, tuner.backbone.model.weights))  # stage 2 trained
        assert not _ran_through_xla(tuner.training_model)  # the model stage 2 trained
        assert tuner.device.compiled["stage2"]["xla"] == "off"
        weights.append([w.numpy() for w in tuner.model.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def _probabilities(export, images: np.ndarray) -> np.ndarray:
    served = tf.saved_model.load(str(export)).signatures["predict_images"]
    probabilities = served(images=tf.constant(images))["probabilities"]
    assert probabilities.dtype == tf.float32
    return probabilities.numpy()


def test_mixed_precision_exports_float32_that_a_float32_reexport_reproduces(xla_run, tmp_path):
    result, _ = xla_run
    images = eval_crops(run_split(result.train_dir, "test").paths,
                        result.backbone.preprocessing, 8)
    exported = _probabilities(result.export_path, images)
    in_process = result.task.probabilities(np.asarray(result.model(images, training=False)))
    np.testing.assert_allclose(exported, in_process, atol=1e-5)  # the same graph, same dtypes

    keras.mixed_precision.set_global_policy("mixed_float16")  # what the mixed run leaves behind
    restored = restore_run(result.train_dir).model
    assert {layer.dtype_policy.name for layer in restored._flatten_layers()} == {"float32"}
    again = reexport(result.train_dir, export_dir=tmp_path)
    assert keras.mixed_precision.global_policy().name == "mixed_float16"  # put back
    float32 = _probabilities(again.export_path, images)
    assert result.metrics["test"]["top1"] > 0.5  # the head learned: the scores are not uniform
    # The mixed model rounds the [0, 1] images (its Normalize layer) and the pooled features (the
    # head's Dropout) to float16's 11 significant bits, a relative error of at most 2^-11 ≈ 5e-4
    # each; with Σ|w·f| ≈ 3 per logit here, logits move by about 2 × 5e-4 × 3 = 3e-3 at most,
    # and a softmax probability by at most half the largest logit change: 5e-3 leaves a margin
    # of 3 (1e-4 is typical), while wrong weights or a float16 head differ by far more.
    np.testing.assert_allclose(exported, float32, atol=5e-3)
