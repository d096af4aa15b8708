"""The two-stage schedule's rules: what each stage trains and how its learning rate moves."""
from __future__ import annotations

import re

import keras

from runway_cnn.errors import RunwayError


def layer_key(variable) -> str:
    """The layer a weight belongs to: its path up to the last ``/`` or ``.``."""
    path = getattr(variable, "path", variable.name)
    return re.split(r"[/.](?=[^/.]*$)", path)[0]


def _set_trainable(layer: keras.layers.Layer, value: bool) -> None:
    """``layer.trainable = value``, always run: on the TensorFlow backend, assigning the value a
    layer already has is short-circuited, so weights frozen one by one would stay frozen."""
    keras.layers.Layer.trainable.fset(layer, value)
    for child in layer._flatten_layers(include_self=False):
        keras.layers.Layer.trainable.fset(child, value)


def freeze(model: keras.Model) -> None:
    """Stage 1: nothing in ``model`` trains (BatchNorm layers then run in inference mode)."""
    _set_trainable(model, False)


def unfreeze(model: keras.Model, rule: str) -> list[str]:
    """Stage 2: makes the weights chosen by ``rule`` trainable and returns their paths.

    ``rule`` is ``"all"``, a number N (the top N layers that have trainable weights), or
    comma-separated layer-name prefixes (TF-Slim's ``--trainable_scopes``). Moving statistics of
    BatchNorm are never trainable; the trainer also keeps BatchNorm in inference mode.
    """
    _set_trainable(model, True)
    candidates = list(model.trainable_weights)
    keys = list(dict.fromkeys(layer_key(v) for v in candidates))
    rule = str(rule).strip()
    if rule == "all":
        chosen = set(keys)
    elif rule.isdigit():
        chosen = set(keys[-int(rule):]) if int(rule) else set()
    else:
        prefixes = [p.strip() for p in rule.split(",") if p.strip()]
        chosen = {k for k in keys if any(_short(k).startswith(p) or k.startswith(p)
                                         for p in prefixes)}
        if not chosen:
            raise RunwayError(f"--unfreeze {rule!r} matches no layer of the backbone; its layers "
                              f"run from {_short(keys[0])!r} to {_short(keys[-1])!r}")
    for v in candidates:
        v.trainable = layer_key(v) in chosen
    return [v.path for v in candidates if v.trainable]


def check_unfreeze(model: keras.Model, rule: str) -> None:
    """Raises :func:`unfreeze`'s error for a rule that matches no layer, before any training;
    leaves ``model`` frozen, as stage 1 wants it."""
    try:
        unfreeze(model, rule)
    finally:
        freeze(model)


def _short(key: str) -> str:
    """A layer key without the names of the models that contain it."""
    return key.split("/")[-1]


def warmup_cosine(peak: float, total_steps: int, warmup_fraction: float
                  ) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from 0 to ``peak`` over the first steps, then cosine decay to 0."""
    total_steps = max(1, int(total_steps))
    warmup = int(round(total_steps * warmup_fraction))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak, decay_steps=max(1, total_steps - warmup),
        warmup_target=peak if warmup else None, warmup_steps=warmup)


class StepSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every training step from ``schedule`` at the
    schedule's position: the optimizer's step count, unless :meth:`finish_in` made it move
    faster. Unlike a schedule compiled into the optimizer, the plan's length may be set after
    the model is compiled (stage 2 measures its step with the compiled model before it plans),
    and it continues from the restored step count when a stage resumes. ``total_steps`` is where
    the schedule ends (its rate then stays at the end's)."""

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule,
                 total_steps: int | None = None):
        super().__init__()
        self.schedule, self.total = schedule, total_steps
        self.position = 0.0
        self.pace = 1.0  # schedule steps per training step

    def on_train_begin(self, logs=None):
        self.position, self.pace = float(self.model.optimizer.iterations.numpy()), 1.0

    def finish_in(self, steps: int) -> None:
        """Moves through the rest of the schedule in ``steps`` training steps (a time budget
        that leaves no more): the rate decays as planned, only sooner."""
        if self.total is not None:
            self.pace = max(1.0, (self.total - self.position) / max(1, steps))

    def on_train_batch_begin(self, batch, logs=None):
        at = self.position if self.total is None else min(self.position, self.total)
        self.model.optimizer.learning_rate = float(self.schedule(at))

    def on_train_batch_end(self, batch, logs=None):
        self.position += self.pace
