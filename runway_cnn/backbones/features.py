"""Features of images from a frozen model: the one place that runs a backbone (or an export's
``feature_vector``) over image files under the eval transform, in batches, rows in the order of
the files. Stage 1, experiments, the audit and the retrieval index all compute features here;
the first three keep them on disk, memory-mapped (:func:`save_features`, :func:`load_features`)."""
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.backbones.factory import Backbone
from runway_cnn.data import pipeline
from runway_cnn.data.dataset import Split
from runway_cnn.data.preprocessing import PreprocessingSpec
from runway_cnn.errors import first_line
from runway_cnn.progress import ImageProgress
from runway_cnn.train_dir import TrainDir

_LOCAL_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → its tf.function


def batch_predictor(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """A batch of inputs → the model's outputs (inference mode) on this process alone. Under a
    multi-worker strategy Keras' ``predict`` would shard the data over the workers, and a worker
    whose shard ends first feeds the model an empty batch (which some CPU kernels refuse), so
    every worker runs the model on all the data itself with no collective ops (the same outputs
    on every worker, at N times the compute)."""
    if not isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model.predict_on_batch
    if model not in _LOCAL_CALLS:
        _LOCAL_CALLS[model] = tf.function(lambda x: model(x, training=False),
                                          reduce_retracing=True)
    call = _LOCAL_CALLS[model]
    return lambda x: np.asarray(call(x))


def predict_rows(model: keras.Model, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's outputs for every row of ``inputs``, in batches (see :func:`batch_predictor`)."""
    run = batch_predictor(model)
    return np.concatenate([np.asarray(run(inputs[i:i + batch_size]))
                           for i in range(0, len(inputs), batch_size)])


@dataclass
class FeatureExtractor:
    """A frozen model as a feature source: ``name`` (what it is, e.g. recorded in an index), its
    eval transform ``spec``, and ``features`` (a batch of eval crops → float32 rows)."""

    name: str
    spec: PreprocessingSpec
    features: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def of_backbone(cls, backbone: Backbone, pooling: str = "avg") -> FeatureExtractor:
        """The backbone's features pooled the way the head wants (average, or max of the map)."""
        run = batch_predictor(backbone.pooled(pooling))
        return cls(backbone.name, backbone.preprocessing,
                   lambda x: np.asarray(run(x), np.float32))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The eval crop of one uint8 image, as a batch row for :attr:`features`."""
        return pipeline.eval_crop(image, self.spec)

    def of_files(self, paths: Sequence[str], batch_size: int,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Features of every file, in order, decoded in parallel; a file that cannot be read is
        a one-line error naming it (the files were scanned before). ``on_batch(n)`` after each
        batch (a progress bar)."""
        return pipeline.predict_in_order(self.features, paths, self.spec, batch_size, on_batch)

    def of_readable_files(self, paths: Sequence[str], batch_size: int,
                          on_batch: Callable[[int], None] | None = None
                          ) -> tuple[np.ndarray, list[int]]:
        """(features, positions in ``paths``) of the files TensorFlow decodes, in the order
        read; the others are left out for the caller to read another way or report."""
        rows, kept = [], []
        for positions, crops in pipeline.indexed_eval_dataset(
                paths, self.spec, batch_size, skip_unreadable=True).as_numpy_iterator():
            rows.append(self.features(crops))
            kept.extend(int(p) for p in positions)
            if on_batch is not None:
                on_batch(len(positions))
        return (np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)), kept


def extract_features(backbone: Backbone, paths: list[str], batch_size: int,
                     pooling: str = "avg", progress: bool = False,
                     what: str = "the frozen backbone, once") -> np.ndarray:
    """Pooled features (float32) of scanned image files under the eval transform, in order;
    ``progress``: a line saying ``what`` and a bar on stderr (the feature pass is the longest
    step of a default run)."""
    bar = None
    if progress:
        print(f"backbone features of {len(paths)} images ({what}):",
              file=sys.stderr, flush=True)
        bar = ImageProgress(len(paths))
    return FeatureExtractor.of_backbone(backbone, pooling).of_files(
        paths, batch_size, bar.add if bar is not None else None)


def feature_settings(backbone: Backbone, pooling: str) -> str:
    """Everything that makes a backbone's pooled features what they are (the model spec, its
    eval transform: image size, crop, normalisation, and the pooling): a cache is for these."""
    return f"{backbone.name} | {pooling} | {backbone.preprocessing!r}"


def save_features(files: TrainDir, pool: Split, backbone: Backbone, pooling: str,
                  features: np.ndarray, seconds: float, stamps: list[str] | None = None
                  ) -> None:
    """The feature cache of an experiment: the array in ``features.npy`` (memory-mapped when
    read back), what it holds (sources, backbone, pooling, the :func:`feature_settings` and,
    if given, each file's ``stamps``) in ``features.npz``."""
    array = files.feature_array
    tmp = array.with_name(f".{array.name}.tmp.npy")
    np.save(tmp, np.asarray(features, np.float32))
    tmp.replace(array)
    tmp = files.features.with_name(f".{files.features.name}.tmp.npz")
    np.savez(tmp, sources=np.array(pool.sources), backbone=np.array(backbone.name),
             pooling=np.array(pooling), seconds=np.array(seconds),
             settings=np.array(feature_settings(backbone, pooling)),
             **({} if stamps is None else {"stamps": np.array(stamps, dtype=str)}))
    tmp.replace(files.features)


def load_features(files: TrainDir, pool: Split, backbone: Backbone, pooling: str,
                  stamps: list[str] | None = None) -> tuple[np.ndarray | None, float]:
    """Features saved by an earlier session of this experiment if they are for these images
    (with ``stamps``, these files as they are now) under the same :func:`feature_settings`,
    memory-mapped (read from disk as rows are used, so memory does not grow with the pool); a
    damaged file is a cache miss (said, and recomputed)."""
    if not (files.features.exists() and files.feature_array.exists()):
        return None, 0.0
    try:
        features = np.load(files.feature_array, mmap_mode="r")
        with np.load(files.features) as saved:
            if (saved["sources"].tolist() != list(pool.sources) or str(saved["backbone"])
                    != backbone.name or features.shape != (len(pool), backbone.feature_dim)
                    or str(saved["pooling"]) != pooling or "settings" not in saved.files
                    or str(saved["settings"]) != feature_settings(backbone, pooling)
                    or stamps is not None and (
                        "stamps" not in saved.files
                        or saved["stamps"].tolist() != list(stamps))):
                return None, 0.0
            return features, float(saved["seconds"])
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file
        print(f"{files.features} is damaged ({first_line(error)}): computing the features again",
              flush=True)
        return None, 0.0
