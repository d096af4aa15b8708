"""Freeze / unfreeze rules and the stage-2 learning-rate schedule."""
from __future__ import annotations

import numpy as np
import pytest

from runway_cnn.training import schedule
from runway_cnn.errors import RunwayError
from tiny_models import tiny_backbone_model


def _trainable_layers(model) -> set[str]:
    return {schedule.layer_key(v).split("/")[-1] for v in model.trainable_weights}


def test_freeze_makes_nothing_trainable():
    model = tiny_backbone_model()
    schedule.freeze(model)
    assert model.trainable_weights == []


def test_unfreeze_all_never_trains_batchnorm_statistics():
    model = tiny_backbone_model()
    schedule.freeze(model)
    paths = schedule.unfreeze(model, "all")
    assert _trainable_layers(model) == {"block1_conv", "block1_bn", "block2_conv", "block2_bn"}
    assert not any("moving" in p for p in paths)


def test_unfreeze_top_n_layers():
    model = tiny_backbone_model()
    schedule.unfreeze(model, "2")
    assert _trainable_layers(model) == {"block2_conv", "block2_bn"}
    schedule.unfreeze(model, "0")
    assert model.trainable_weights == []


def test_unfreeze_by_prefix_like_trainable_scopes():
    model = tiny_backbone_model()
    schedule.unfreeze(model, "block2,block1_bn")
    assert _trainable_layers(model) == {"block1_bn", "block2_conv", "block2_bn"}


def test_unfreeze_unknown_prefix_names_the_layers():
    with pytest.raises(RunwayError, match="matches no layer.*block1_conv"):
        schedule.unfreeze(tiny_backbone_model(), "block9")


def test_warmup_cosine_rises_then_decays():
    lr = schedule.warmup_cosine(1e-3, total_steps=100, warmup_fraction=0.1)
    values = np.array([float(lr(step)) for step in range(101)])
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[10] == pytest.approx(1e-3, rel=1e-5)
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) <= 1e-12)
    assert values[100] == pytest.approx(0.0, abs=1e-7)


def test_unfreeze_after_a_narrower_unfreeze_restores_every_layer(tmp_path):
    from runway_cnn.backbones.factory import get_backbone
    from tiny_models import make_tiny_hub_module

    backbone = get_backbone(f"hub:{make_tiny_hub_module(tmp_path / 'hub')}", image_size=32)
    assert len(schedule.unfreeze(backbone.model, "all")) == 8
    assert len(schedule.unfreeze(backbone.model, "0")) == 0
    assert len(schedule.unfreeze(backbone.model, "all")) == 8
    schedule.freeze(backbone.model)
    assert backbone.model.trainable_weights == []


def test_step_schedule_sets_each_steps_rate_and_continues_after_a_restart():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.0), loss="mse")
    rate = schedule.warmup_cosine(1e-2, total_steps=8, warmup_fraction=0.25)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    callbacks = [schedule.StepSchedule(rate), Record()]
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=callbacks)  # steps 0-3
    model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=callbacks)  # steps 4-7
    expected = [float(rate(step)) for step in range(8)]
    assert seen == pytest.approx(expected) and max(seen) == pytest.approx(1e-2)
