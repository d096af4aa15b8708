"""Task heads: small Keras models from pooled backbone features to logits, and the
standardisation a convex stage-1 solver fits them on."""
from __future__ import annotations

import keras
import numpy as np

# features are divided by their standard deviation, but by no less than this quantile of them
SCALE_FLOOR_QUANTILE = 0.5


def feature_scale(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale that standardise ``features`` for the convex head, each scale floored at
    the median feature's: a feature that barely varies on the training images would otherwise
    get a weight in proportion to ``1 / std`` and dominate the logits as soon as it moves (stage 2
    trains on smaller, augmented images: the unfloored head started it at a loss worse than
    chance and large gradients)."""
    mean, std = features.mean(axis=0), features.std(axis=0)
    varying = std[std > 0]  # constant features (std 0) must not pull the floor down to 0
    floor = float(np.quantile(varying, SCALE_FLOOR_QUANTILE)) if varying.size else 1.0
    return mean, np.maximum(std, floor)


def fold_standardisation(coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
                         scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A linear model on ``(x - mean) / scale`` as one on ``x``:
    w·(x - μ)/σ + b = (w/σ)·x + (b - (w/σ)·μ)."""
    coef = coef / scale
    return coef, intercept - coef @ mean


def classification_head(feature_dim: int, num_outputs: int, dropout: float = 0.2,
                        name: str = "head") -> keras.Model:
    """Dropout + dense logits (softmax / sigmoid is the task's business, not the head's)."""
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(features) if dropout else features
    logits = keras.layers.Dense(num_outputs, name="logits", dtype="float32")(x)
    return keras.Model(features, logits, name=name)
