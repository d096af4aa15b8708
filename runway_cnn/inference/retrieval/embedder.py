"""The embedder of the retrieval index: a model (an export or train dir, or a backbone registry
name) as a :class:`FeatureExtractor`, and L2-normalised embeddings of image files, reading odd
images as ``predict`` reads them and listing the unreadable ones."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from runway_cnn.backbones.features import FeatureExtractor
from runway_cnn.inference.batch import read_image, unreadable_reason
from runway_cnn.progress import ImageProgress


def load_embedder(model: str | os.PathLike) -> FeatureExtractor:
    """An export / train dir (its ``feature_vector`` endpoint), or a backbone registry name."""
    from runway_cnn.backbones.factory import BACKBONES, get_backbone

    if str(model) in BACKBONES and not Path(model).exists():
        return FeatureExtractor.of_backbone(get_backbone(str(model)))
    from runway_cnn.inference.predictor import Predictor

    predictor = Predictor(model)  # the closure keeps the loaded model (and its variables)
    return FeatureExtractor(str(predictor.version_dir), predictor.spec,
                            lambda x: np.asarray(predictor.model.feature_vector(x)))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity becomes an inner product)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_files(embedder: FeatureExtractor, files: Sequence[Path], batch_size: int = 32,
                progress: bool = False) -> tuple[np.ndarray, list[int], list[dict]]:
    """(L2-normalised embeddings of the readable files, their positions in ``files``, the
    unreadable ones with their errors). Files TensorFlow reads as the trainer does are decoded
    in parallel by tf.data; the others (EXIF-rotated, CMYK, 16-bit, other formats) and those
    TensorFlow fails on go through :func:`read_image` one by one, as ``predict`` reads them."""

    from PIL import Image

    from runway_cnn.data import images as image_checks

    native = []
    for i, path in enumerate(files):
        try:
            with image_checks.strict_decoding(), Image.open(path) as im:
                if not image_checks.conversion_reason(im):
                    native.append(i)
        except Exception:  # noqa: BLE001 - read one by one below, which names the problem
            pass
    bar = ImageProgress(len(files)) if progress else None
    vectors, kept = [], []
    if native:
        rows, read = embedder.of_readable_files([os.fspath(files[i]) for i in native],
                                                batch_size, bar.add if bar is not None else None)
        if read:
            vectors.append(rows)
            kept.extend(native[p] for p in read)
    skipped, rest = [], sorted(set(range(len(files))) - set(kept))
    for start in range(0, len(rest), batch_size):
        positions, crops = [], []
        for i in rest[start:start + batch_size]:
            try:
                crops.append(embedder.crop(read_image(files[i])))
                positions.append(i)
            except Exception as error:  # noqa: BLE001 - any unreadable file is listed
                skipped.append({"path": str(files[i]), "error": unreadable_reason(error)})
        if crops:
            vectors.append(embedder.features(np.stack(crops)))
            kept.extend(positions)
        if bar is not None:
            bar.add(len(rest[start:start + batch_size]))
    if not vectors:
        return np.zeros((0, 0), np.float32), [], skipped
    order = np.argsort(kept, kind="stable")
    return normalise(np.concatenate(vectors))[order], [kept[i] for i in order], skipped
