"""The frozen backbone's features, computed once: pooled the way the head wants (average, or max of
the feature map), with a progress bar (the feature pass is the longest step of a default run),
and kept on disk for a resumed experiment."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from runway_cnn.backbones.factory import Backbone
from runway_cnn.data import pipeline
from runway_cnn.data.dataset import Split
from runway_cnn.errors import first_line
from runway_cnn.training.runtime import predict


def eval_images(paths: list[str], backbone: Backbone, batch_size: int) -> np.ndarray:
    """uint8 ``[n, s, s, 3]``: every image decoded and eval-transformed, as the pipeline does."""
    ds = pipeline.eval_dataset(paths, None, backbone.preprocessing, batch_size, cache=False)
    return np.concatenate([np.round(batch * 255.0).astype(np.uint8)
                           for batch in ds.as_numpy_iterator()])


def image_features(images: np.ndarray, backbone: Backbone, batch_size: int,
                   pooling: str = "avg", progress: bool = False) -> np.ndarray:
    """Pooled features (float32) of uint8 eval crops from :func:`eval_images`."""
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
        lambda x: tf.cast(x, tf.float32) / 255.0)
    return _predict(backbone.pooled(pooling), ds, len(images), progress)


def _predict(model, ds, count: int, progress: bool) -> np.ndarray:
    """``model.predict`` with a progress bar of images (stderr) when ``progress``."""
    if progress:
        print(f"backbone features of {count} images (the frozen backbone, once):",
              file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(sys.stderr):
            return np.asarray(predict(model, ds, verbose=1), np.float32)
    return np.asarray(predict(model, ds), np.float32)


def save_features(path: Path, pool: Split, backbone: Backbone, pooling: str,
                  features: np.ndarray, seconds: float) -> None:
    """The feature cache of an experiment (sources, backbone and pooling name what it holds)."""
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, sources=np.array(pool.sources), features=features,
             backbone=np.array(backbone.name), pooling=np.array(pooling),
             seconds=np.array(seconds))
    tmp.replace(path)


def load_features(path: Path, pool: Split, backbone: Backbone,
                  pooling: str) -> tuple[np.ndarray | None, float]:
    """Features saved by an earlier session of this experiment, if they are for these images;
    a damaged file is a cache miss (said, and recomputed)."""
    if not path.exists():
        return None, 0.0
    try:
        with np.load(path) as saved:
            if (saved["sources"].tolist() != list(pool.sources) or str(saved["backbone"])
                    != backbone.name or saved["features"].shape[1] != backbone.feature_dim
                    or (str(saved["pooling"]) if "pooling" in saved.files else "avg")
                    != pooling):
                return None, 0.0
            return saved["features"], float(saved["seconds"])
    except Exception as error:  # noqa: BLE001 - a truncated or foreign .npz
        print(f"{path} is damaged ({first_line(error)}): computing the features again",
              flush=True)
        return None, 0.0


def extract_features(backbone: Backbone, paths: list[str], batch_size: int,
                     pooling: str = "avg", progress: bool = False) -> np.ndarray:
    """Pooled features (float32) of image files under the eval transform, in order."""
    ds = pipeline.eval_dataset(paths, None, backbone.preprocessing, batch_size, cache=False)
    return _predict(backbone.pooled(pooling), ds, len(paths), progress)
