"""TFLite files beside a SavedModel version: float and dynamic-range-quantised (int8 weights,
float activations), images ``[1, s, s, 3]`` in [0, 1] → ``probabilities``."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.errors import RunwayError

TFLITE_VARIANTS = ("float", "dynamic_range")


def tflite_path(version_dir: Path, variant: str) -> Path:
    """``<serving_name>/<version>.<variant>.tflite``, beside the version dir (TF Serving skips
    files whose name is not a version number)."""
    return version_dir.parent / f"{version_dir.name}.{variant}.tflite"


def export_tflite(model: keras.Model, task, image_size: int, version_dir: str | Path,
                  variants=TFLITE_VARIANTS) -> dict[str, Path]:
    """Converts images → ``probabilities`` to TFLite, float and / or dynamic-range quantised
    (int8 weights, float activations), written beside ``version_dir``; returns variant → path."""
    version_dir = Path(version_dir)
    for variant in variants:
        if variant not in TFLITE_VARIANTS:
            raise RunwayError(f"unknown TFLite variant {variant!r} (known: {TFLITE_VARIANTS})")
    # Keras 3's route to TFLite: ExportArchive → SavedModel → from_saved_model (converting a
    # concrete function directly leaves the Keras variables as uninitialised READ_VARIABLEs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda images: {"probabilities": task.predict_outputs(
            model(images, training=False), 1)["probabilities"]},
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                       name="images")])
    paths = {}
    with tempfile.TemporaryDirectory(prefix="runway_cnn_tflite_") as saved_model:
        archive.write_out(saved_model, verbose=False)
        for variant in variants:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
            if variant == "dynamic_range":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            flatbuffer = converter.convert()
            path = tflite_path(version_dir, variant)
            tmp = path.with_name(f".tmp-{path.name}")
            tmp.write_bytes(flatbuffer)
            os.replace(tmp, path)
            paths[variant] = path
    return paths


def _tflite_interpreter(path: Path):
    try:  # LiteRT, TFLite's new home, when installed
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's "moved to LiteRT" notice
        return Interpreter(model_path=str(path))


def tflite_probabilities(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Runs a runway_cnn ``.tflite`` on float images ``[n, s, s, 3]``, one image a call (the
    batch-1 way a phone runs it); returns ``[n, classes]``."""
    interpreter = _tflite_interpreter(Path(path))
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    rows = []
    for image in np.asarray(images, np.float32):
        interpreter.set_tensor(source, image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target)[0].copy())
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)
