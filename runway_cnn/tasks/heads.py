"""Task heads: small Keras models from pooled backbone features to logits."""
from __future__ import annotations

import keras


def classification_head(feature_dim: int, num_outputs: int, dropout: float = 0.2,
                        name: str = "head") -> keras.Model:
    """Dropout + dense logits (softmax / sigmoid is the task's business, not the head's)."""
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(features) if dropout else features
    logits = keras.layers.Dense(num_outputs, name="logits", dtype="float32")(x)
    return keras.Model(features, logits, name=name)
