"""Using an export locally: :class:`Predictor` gives the answers TF Serving gives a
:class:`~runway_cnn.inference.client.Client`.

    Predictor("exports/looks").predict(["a.jpg", b"<jpeg bytes>", array])
    → [{"labels": ["dress", "skirt", ...], "scores": [0.91, 0.05, ...]}, ...]

Images are file paths, encoded bytes (JPEG / PNG / GIF / BMP) or arrays (``[h, w, 3]`` uint8, or
float in [0, 1]; sent as PNG); the model decodes, resizes and crops them itself.

Undecodable images (see :mod:`runway_cnn.export.saved_model`): by default the whole request
fails — :class:`Predictor` raises :class:`~runway_cnn.errors.DataError` naming the bad images.
With ``per_image_errors=True`` the ``serving_per_image`` signature is used and each bad image's
result is ``{"labels": [], "scores": [], "error": "..."}`` while the others are classified
normally.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from runway_cnn.data.images import encoded_as_trained
from runway_cnn.data.pipeline import eval_crop
from runway_cnn.data.preprocessing import PreprocessingSpec
from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.export.gradcam import gradcam_refusal
from runway_cnn.export.saved_model import load_export
from runway_cnn.export_dir import IMAGE_BYTES
from runway_cnn.tasks import Task, task_from_config

INVALID_IMAGE = "not a decodable image (JPEG, PNG, GIF or BMP expected; empty or truncated?)"


# --- inputs and outputs -------------------------------------------------------------------------

def _is_single(images: Any) -> bool:
    if isinstance(images, (str, bytes, bytearray, os.PathLike)):
        return True
    return isinstance(images, np.ndarray) and images.ndim in (2, 3)


def _array_to_png(array: np.ndarray, what: str) -> bytes:
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise DataError(f"{what}: array of shape {a.shape} is not an image ([h, w, 3] expected)")
    if a.dtype != np.uint8:
        a = np.round(check_unit_floats(a, what) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(a).convert("RGB").save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def check_unit_floats(images: np.ndarray, what: str) -> np.ndarray:
    """``images`` if they are floats in [0, 1] (no NaN); otherwise a :class:`DataError` saying
    which range was given (0..255 floats would all be clipped to white, NaN read as black)."""
    a = np.asarray(images)
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{what}: array of dtype {a.dtype}; give uint8 in [0, 255] or float in "
                        "[0, 1]")
    if a.size and not np.isfinite(a).all():
        raise DataError(f"{what}: float array with NaN or infinite values; give float in [0, 1]")
    if a.size and (a.min() < 0 or a.max() > 1):
        raise DataError(f"{what}: float array with values in [{a.min():g}, {a.max():g}]; give "
                        "float in [0, 1] (divide 0..255 values by 255) or uint8")
    return a


def encode_images(images: Any) -> tuple[list[bytes], list[str]]:
    """Paths / encoded bytes / arrays (one, or a sequence, or a ``[n, h, w, 3]`` array) → the
    encoded bytes the signatures take, and a name for each (for error messages)."""
    items = [images] if _is_single(images) else list(images)
    encoded, names = [], []
    for i, item in enumerate(items):
        if isinstance(item, (bytes, bytearray)):
            encoded.append(bytes(item))
            names.append(f"image #{i} (bytes)")
        elif isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise DataError(f"image file {path} not found")
            encoded.append(encoded_as_trained(path))  # upright, opaque RGB as in training
            names.append(str(path))
        elif isinstance(item, np.ndarray):
            encoded.append(_array_to_png(item, f"image #{i}"))
            names.append(f"image #{i} (array)")
        else:
            raise DataError(f"image #{i}: a {type(item).__name__} is not an image (give a path, "
                            "encoded bytes or an array)")
    return encoded, names


def _concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batches' outputs joined; a second axis that varies between batches (the labels a
    multi-label batch explains) is padded: -1 for indices, 0 for maps."""
    joined = {}
    for key in parts[0]:
        arrays = [p[key] for p in parts]
        if arrays[0].ndim > 1 and len({a.shape[1] for a in arrays}) > 1:
            width = max(a.shape[1] for a in arrays)
            fill = -1 if np.issubdtype(arrays[0].dtype, np.integer) else 0
            arrays = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                             constant_values=fill) for a in arrays]
        joined[key] = np.concatenate(arrays)
    return joined


def _signature(per_image_errors: bool) -> str:
    return "serving_per_image" if per_image_errors else "serving_default"


# --- local --------------------------------------------------------------------------------------

class Predictor:
    """The local Python API over an export (a version dir, a serving-name dir, an export base with
    one model, or a train dir): the same answers as TF Serving gives a :class:`Client`."""

    def __init__(self, path: str | Path, batch_size: int = 32):
        self.model = load_export(path)
        self.version_dir: Path = self.model.version_dir
        self.meta: dict = self.model.meta
        recorded = self.meta.get("task")  # exports before tasks were saved whole: a name
        self.task: Task = task_from_config(recorded if isinstance(recorded, dict) else
                                           {"task": recorded, "labels": list(self.model.labels)})
        self.labels: list[str] = self.task.labels
        self.batch_size = batch_size

    def _run(self, signature: str, encoded: list[bytes]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        fn = self.model.signatures[signature]
        parts = [{k: v.numpy() for k, v in fn(**{IMAGE_BYTES: tf.constant(
                  encoded[i:i + self.batch_size], tf.string)}).items()}
                 for i in range(0, len(encoded), self.batch_size)]
        if not parts:
            raise DataError("no images given")
        return _concatenate(parts)

    def _call(self, signature: str, images) -> dict[str, np.ndarray]:
        """A bytes signature's outputs; undecodable images are a :class:`DataError` naming them
        (found with ``serving_per_image``), never a raw TensorFlow error."""
        import tensorflow as tf

        encoded, names = encode_images(images)
        try:
            return self._run(signature, encoded)
        except tf.errors.InvalidArgumentError as error:
            valid = self._run("serving_per_image", encoded)["valid"]
            bad = [name for name, ok in zip(names, valid) if not ok]
            if not bad:
                raise RunwayError(f"{self.version_dir}: the model failed on these images: "
                                  f"{first_line(error)}") from error
            hint = (" (pass per_image_errors=True to get the other images' predictions)"
                    if signature != "embed" and len(bad) < len(names) else "")
            raise DataError(f"{INVALID_IMAGE}: {', '.join(bad)}{hint}") from error

    def outputs(self, images, per_image_errors: bool = False) -> dict[str, np.ndarray]:
        """The raw signature outputs (the task's, e.g. ``probabilities``, ``classes``,
        ``scores``; with ``per_image_errors`` also ``valid``)."""
        return self._call(_signature(per_image_errors), images)

    def predict(self, images, per_image_errors: bool = False) -> list[dict]:
        """One result dict per image, as the export's task decodes it (single-label:
        ``{"labels": [...top-k], "scores": [...]}``, best first)."""
        return self.task.decode(self.outputs(images, per_image_errors), INVALID_IMAGE)

    @property
    def explains(self) -> bool:
        """Whether the export can explain its answers (a backbone with a feature map)."""
        return "explain" in self.model.signatures

    def explain(self, images) -> list[dict]:
        """:meth:`predict`'s result per image plus ``explanations``: for each label the result
        gives (single-label: the top-1; multi-label: each predicted label; attributes: each
        attribute's value) ``{"label": ..., "score": ..., "heatmap": float32 [s, s]}``, the
        label's Grad-CAM map over the eval crop (:meth:`crop`), in [0, 1]. An export whose
        backbone has no feature map raises a one-line :class:`RunwayError`."""
        self.require_explain()
        return self.decode_explained(self._call("explain", images))

    def explain_crops(self, images: np.ndarray) -> list[dict]:
        """:meth:`explain` for eval crops ``[n, s, s, 3]`` in [0, 1] (see :meth:`crop`)."""
        return self.decode_explained(self.explain_outputs(images))

    def explain_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Eval crops → the ``explain_images`` signature's outputs: the task's, plus
        ``explained`` (label indices ``[n, m]``, -1 for none) and ``heatmaps``
        ``[n, m, s, s]``."""
        import tensorflow as tf

        self.require_explain()
        images = self._check_crops(images)
        fn = self.model.signatures["explain_images"]
        return _concatenate([{k: v.numpy() for k, v in fn(images=tf.constant(
            images[i:i + self.batch_size], tf.float32)).items()}
            for i in range(0, len(images), self.batch_size)])

    def require_explain(self) -> None:
        """A one-line :class:`RunwayError` unless the export has Grad-CAM signatures."""
        if not self.explains:
            raise RunwayError(gradcam_refusal(self.meta, self.version_dir))

    def decode_explained(self, outputs: dict[str, np.ndarray]) -> list[dict]:
        """An ``explain`` signature's outputs → :meth:`explain`'s results."""
        results = self.task.decode(outputs, INVALID_IMAGE)
        for i, result in enumerate(results):
            result["explanations"] = [
                {"label": self.labels[j], "score": float(outputs["probabilities"][i, j]),
                 "heatmap": outputs["heatmaps"][i, c]}
                for c, j in enumerate(outputs["explained"][i]) if j >= 0]
        return results

    def embed(self, images) -> np.ndarray:
        """Pooled backbone features ``[n, feature_dim]`` (the ``embed`` signature)."""
        return self._call("embed", images)["embedding"]

    @property
    def spec(self) -> PreprocessingSpec:
        """The export's eval transform (input size, crop fraction)."""
        pre = self.meta["preprocessing"]
        return PreprocessingSpec(int(pre["image_size"]), float(pre["crop_fraction"]))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[h, w, 3]`` → the eval crop as float32 in [0, 1], exactly as the training
        pipeline makes it (including its uint8 rounding)."""
        return eval_crop(image, self.spec)

    def crop_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """float32 ``[n, s, s, 3]`` eval crops in [0, 1] → the ``predict_images`` signature's
        outputs (the task's; ``probabilities`` are the scores evaluation uses)."""
        import tensorflow as tf

        images = self._check_crops(images)
        out = self.model.signatures["predict_images"](images=tf.constant(images, tf.float32))
        return {k: v.numpy() for k, v in out.items()}

    def _check_crops(self, images: np.ndarray) -> np.ndarray:
        size = self.spec.image_size
        images = check_unit_floats(images, "images")
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise DataError(f"images of shape {images.shape}: the model takes [n, {size}, {size}, "
                            "3] eval crops (see Predictor.crop)")
        if not len(images):
            raise DataError("no images given")
        return images

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Eval crops → the task's scores (``probabilities``) for evaluation."""
        return self.crop_outputs(images)["probabilities"]
