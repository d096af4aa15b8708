"""The frozen backbone's features, computed once: pooled the way the head wants (average, or max of
the feature map), with a progress bar (the feature pass is the longest step of a default run),
streamed (no image is kept) and kept on disk, memory-mapped, for an experiment."""
from __future__ import annotations

import sys

import numpy as np

from runway_cnn.backbones.factory import Backbone
from runway_cnn.data import pipeline
from runway_cnn.data.dataset import Split
from runway_cnn.errors import first_line
from runway_cnn.progress import ImageProgress
from runway_cnn.runfiles import TrainDir
from runway_cnn.training.runtime import batch_predictor


def save_features(files: TrainDir, pool: Split, backbone: Backbone, pooling: str,
                  features: np.ndarray, seconds: float) -> None:
    """The feature cache of an experiment: the array in ``features.npy`` (memory-mapped when
    read back), what it holds (sources, backbone, pooling) in ``features.npz``."""
    array = files.feature_array
    tmp = array.with_name(f".{array.name}.tmp.npy")
    np.save(tmp, np.asarray(features, np.float32))
    tmp.replace(array)
    tmp = files.features.with_name(f".{files.features.name}.tmp.npz")
    np.savez(tmp, sources=np.array(pool.sources), backbone=np.array(backbone.name),
             pooling=np.array(pooling), seconds=np.array(seconds))
    tmp.replace(files.features)


def load_features(files: TrainDir, pool: Split, backbone: Backbone,
                  pooling: str) -> tuple[np.ndarray | None, float]:
    """Features saved by an earlier session of this experiment if they are for these images,
    memory-mapped (read from disk as rows are used, so memory does not grow with the pool); a
    damaged file is a cache miss (said, and recomputed)."""
    if not (files.features.exists() and files.feature_array.exists()):
        return None, 0.0
    try:
        features = np.load(files.feature_array, mmap_mode="r")
        with np.load(files.features) as saved:
            if (saved["sources"].tolist() != list(pool.sources) or str(saved["backbone"])
                    != backbone.name or features.shape != (len(pool), backbone.feature_dim)
                    or str(saved["pooling"]) != pooling):
                return None, 0.0
            return features, float(saved["seconds"])
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file
        print(f"{files.features} is damaged ({first_line(error)}): computing the features again",
              flush=True)
        return None, 0.0


def extract_features(backbone: Backbone, paths: list[str], batch_size: int,
                     pooling: str = "avg", progress: bool = False) -> np.ndarray:
    """Pooled features (float32) of image files under the eval transform, in order."""
    bar = None
    if progress:
        print(f"backbone features of {len(paths)} images (the frozen backbone, once):",
              file=sys.stderr, flush=True)
        bar = ImageProgress(len(paths))
    run = batch_predictor(backbone.pooled(pooling))
    return pipeline.predict_in_order(lambda x: np.asarray(run(x), np.float32),
                                     paths, backbone.preprocessing, batch_size,
                                     bar.add if bar is not None else None)
