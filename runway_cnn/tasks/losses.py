"""Losses of the tasks' heads (serialisable, so a saved model reloads)."""
from __future__ import annotations

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
