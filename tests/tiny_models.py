"""Tiny TF-Hub-format SavedModel backbones that tests make themselves (nothing is downloaded)."""
from __future__ import annotations

from pathlib import Path

import keras

from runway_cnn.hub import save_hub_module


def tiny_backbone_model(seed: int = 0) -> keras.Model:
    """[0, 1] images → 16-d pooled features: two conv + BatchNorm + ReLU blocks."""
    init = keras.initializers.GlorotUniform(seed=seed)
    images = keras.Input((None, None, 3))
    x = images
    for i, width in enumerate((8, 16), start=1):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"block{i}_conv",
                                kernel_initializer=init)(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, features, name="tiny")


def make_tiny_hub_module(path: Path, seed: int = 0) -> Path:
    """Writes the tiny backbone as a TF-Hub reusable SavedModel at ``path``; returns ``path``."""
    save_hub_module(tiny_backbone_model(seed), str(path))
    return Path(path)
