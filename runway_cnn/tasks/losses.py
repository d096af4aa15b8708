"""Losses of the tasks' heads (serialisable, so a saved model reloads)."""
from __future__ import annotations

from typing import Sequence

import keras


@keras.saving.register_keras_serializable(package="runway_cnn")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy on integer labels with optional label smoothing."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, name="crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.label_smoothing = int(num_classes), float(label_smoothing)

    def call(self, y_true, y_pred):
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32"),
                                    self.num_classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="runway_cnn")
class AsymmetricLoss(keras.losses.Loss):
    """ASL (Ridnik et al., ICCV 2021) on multi-hot targets and logits, averaged over labels:

        L+ = (1 - p)^γ+ · log(p),   L- = p_m^γ- · log(1 - p_m),   p_m = max(p - clip, 0)

    (positives focused by γ+, easy negatives down-weighted by γ- and discarded below ``clip``).
    ``gamma_neg=0, gamma_pos=0, clip=0`` is binary cross-entropy."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 name="asymmetric_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma_neg, self.gamma_pos, self.clip = float(gamma_neg), float(gamma_pos), float(clip)

    def call(self, y_true, y_pred):
        ops = keras.ops
        eps = 1e-8
        y = ops.cast(y_true, "float32")
        z = ops.cast(y_pred, "float32")
        p = ops.sigmoid(z)
        log_p = ops.log_sigmoid(z)  # log(p), stable for any logit
        if self.clip > 0:
            p_m = ops.maximum(p - self.clip, 0.0)
            log_not_p_m = ops.log(ops.maximum(1.0 - p_m, eps))
        else:
            p_m, log_not_p_m = p, ops.log_sigmoid(-z)
        positive = y * self._focus(1.0 - p, self.gamma_pos) * log_p
        negative = (1.0 - y) * self._focus(p_m, self.gamma_neg) * log_not_p_m
        return -ops.mean(positive + negative, axis=-1)

    @staticmethod
    def _focus(base, gamma: float):
        """base^γ, 1 for γ = 0, with a base kept off 0 (the gradient of x^γ at 0 is 0·∞)."""
        if gamma == 0:
            return 1.0
        return keras.ops.power(keras.ops.maximum(base, 1e-8), gamma)

    def get_config(self):
        return {**super().get_config(), "gamma_neg": self.gamma_neg,
                "gamma_pos": self.gamma_pos, "clip": self.clip}


@keras.saving.register_keras_serializable(package="runway_cnn")
class MaskedAttributeCrossentropy(keras.losses.Loss):
    """Attribute heads side by side in the logits: per image, the sum over attributes of the
    softmax cross-entropy of its known cells (target ≥ 0; -1 is unknown and weighs nothing),
    each times its attribute's weight and, when given, its value's weight."""

    def __init__(self, sizes: Sequence[int], attribute_weights: Sequence[float] | None = None,
                 value_weights: Sequence[float] | None = None, name="masked_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.sizes = [int(n) for n in sizes]
        self.attribute_weights = ([1.0] * len(self.sizes) if attribute_weights is None
                                  else [float(w) for w in attribute_weights])
        self.value_weights = None if value_weights is None else [float(w) for w in value_weights]

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        total, start = 0.0, 0
        for i, size in enumerate(self.sizes):
            target = y_true[:, i]
            known = keras.ops.cast(target >= 0, y_pred.dtype)
            safe = keras.ops.maximum(target, 0)
            cross = keras.ops.sparse_categorical_crossentropy(
                safe, y_pred[:, start:start + size], from_logits=True)
            weight = known * self.attribute_weights[i]
            if self.value_weights is not None:
                table = keras.ops.convert_to_tensor(self.value_weights[start:start + size],
                                                    y_pred.dtype)
                weight = weight * keras.ops.take(table, safe)
            total = total + cross * weight
            start += size
        return total

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes,
                "attribute_weights": self.attribute_weights, "value_weights": self.value_weights}
