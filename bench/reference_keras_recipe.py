"""The plain Keras recipe issue 5 measures runway_cnn against (keras.io's transfer-learning guide).

    PYTHONPATH=. python bench/reference_keras_recipe.py [--dataset_dir D] [--seed 0]

``image_dataset_from_directory`` at 224 px (the whole photo squashed to a square), RandomFlip +
RandomRotation(0.1), the ImageNet EfficientNet-Lite0 base called with ``training=False``,
dropout 0.2 + a dense head; Adam 1e-3 for 5 epochs on the frozen base, then
``base.trainable = True`` and Adam 1e-5 for 3 epochs. Same weights as runway_cnn's
``efficientnet_lite0`` (built in Keras from the pip package's PyTorch pickle). Prints each
stage's wall time and validation accuracy, and the final validation and test accuracy.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras

from runway_cnn.backbones.checkpoints import load_keras_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_dir", default="/work/shared/data/clothing-small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    root = Path(args.dataset_dir)
    start = time.perf_counter()

    def split(name: str, shuffle: bool):
        return keras.utils.image_dataset_from_directory(
            root / name, image_size=(224, 224), batch_size=32, shuffle=shuffle, seed=args.seed)

    train, val, test = split("train", True), split("validation", False), split("test", False)
    num_classes = len(train.class_names)

    base = load_keras_model("efficientnet_lite0", include_top=False)  # [0, 1] images → 1280-d
    base.trainable = False
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomRotation(0.1)(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = base(x, training=False)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(num_classes)(x))

    def fit(learning_rate: float, epochs: int) -> tuple[float, float]:
        model.compile(keras.optimizers.Adam(learning_rate),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        t = time.perf_counter()
        history = model.fit(train, validation_data=val, epochs=epochs, verbose=2)
        return time.perf_counter() - t, history.history["val_accuracy"][-1]

    stage1 = fit(1e-3, 5)
    base.trainable = True
    stage2 = fit(1e-5, 3)
    val_acc = model.evaluate(val, verbose=0)[1]
    test_acc = model.evaluate(test, verbose=0)[1]
    print(f"stage 1: {stage1[0]:.0f} s, validation {stage1[1]:.3f}")
    print(f"stage 2: {stage2[0]:.0f} s, validation {stage2[1]:.3f}")
    print(f"final: validation {val_acc:.3f}, test {test_acc:.3f}, "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
