"""SavedModel export for TF Serving: ``<export_dir>/<serving_name>/<version>/``, written atomically.

Signatures (preprocessing is inside the graph, so clients send raw bytes):
- ``serving_default``: ``image_bytes`` (tf.string ``[None]``, encoded JPEG / PNG / GIF / BMP) →
  the task's outputs (single-label: ``probabilities``, ``classes`` top-k label strings, ``scores``).
  An undecodable image fails the whole request with an ``InvalidArgument`` error.
- ``predict_images``: float32 ``[None, s, s, 3]`` images in [0, 1] → the same outputs.
- ``embed``: ``image_bytes`` → ``embedding``, the pooled backbone features (retrieval).
- ``feature_vector``: float32 images in [0, 1] → features; what ``--init_from_run`` reuses.
Assets: ``labels.txt`` (one label a line) and ``runway_cnn.json`` (backbone, task, preprocessing).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from runway_cnn.errors import CheckpointError
from runway_cnn.preprocessing import central_crop, decode_image

META_FILE = "runway_cnn.json"


def _version_dirs(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    return sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def next_version(model_dir: Path) -> int:
    versions = _version_dirs(model_dir)
    return int(versions[-1].name) + 1 if versions else 1


def export_model(model: keras.Model, backbone, task, export_dir: str | Path, serving_name: str,
                 top_k: int = 5, version: int | None = None) -> Path:
    """Writes the SavedModel and returns its version directory."""
    spec = backbone.preprocessing
    size = spec.image_size

    def preprocess(image_bytes):
        return tf.map_fn(lambda b: central_crop(decode_image(b), spec), image_bytes,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    def predict_images(images):
        return task.predict_outputs(model(images, training=False), top_k)

    archive = keras.export.ExportArchive()
    archive.track(model)
    image_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    archive.add_endpoint("serving_default", lambda image_bytes: predict_images(
        preprocess(image_bytes)), input_signature=[bytes_spec])
    archive.add_endpoint("predict_images", predict_images, input_signature=[image_spec])
    archive.add_endpoint("embed", lambda image_bytes: {"embedding": backbone.model(
        preprocess(image_bytes), training=False)}, input_signature=[bytes_spec])
    archive.add_endpoint("feature_vector", lambda images: backbone.model(images, training=False),
                         input_signature=[image_spec])

    model_dir = Path(export_dir) / serving_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version or next_version(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        archive.write_out(str(tmp), verbose=False)
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        (assets / "labels.txt").write_text("\n".join(task.class_names) + "\n")
        meta = {"backbone": backbone.name, "backbone_source": backbone.source,
                "feature_dim": backbone.feature_dim, "top_k": top_k, **task.config(),
                "preprocessing": {"image_size": size, "crop_fraction": spec.crop_fraction}}
        (assets / META_FILE).write_text(json.dumps(meta, indent=2))
        final = model_dir / str(version)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def resolve_export(path: str | Path) -> Path:
    """A version dir as is; a serving-name dir → its newest version; an export base with one
    model, or a train dir (via its metrics.json or ``export/``) → that model's newest version."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    metrics = path / "metrics.json"
    if metrics.exists():
        recorded = json.loads(metrics.read_text()).get("export_path")
        if recorded and (Path(recorded) / "saved_model.pb").exists():
            return Path(recorded)
    versions = _version_dirs(path)
    if versions:
        return versions[-1]
    for base in (path, path / "export"):
        models = [p for p in base.iterdir() if _version_dirs(p)] if base.is_dir() else []
        if len(models) == 1:
            return _version_dirs(models[0])[-1]
        if len(models) > 1:
            names = ", ".join(p.name for p in models)
            raise CheckpointError(f"{base} holds several models ({names}); name one")
    raise CheckpointError(f"no SavedModel export found under {path}")


def load_export(path: str | Path):
    """``tf.saved_model.load`` of :func:`resolve_export`'s answer, with its labels attached."""
    version_dir = resolve_export(path)
    loaded = tf.saved_model.load(str(version_dir))
    loaded.labels = (version_dir / "assets" / "labels.txt").read_text().splitlines()
    loaded.meta = json.loads((version_dir / "assets" / META_FILE).read_text())
    return loaded
