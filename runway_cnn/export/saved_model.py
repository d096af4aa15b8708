"""SavedModel export for TF Serving: ``<export_dir>/<serving_name>/<version>/``, written atomically.

Layout (what ``tensorflow_model_server --model_base_path=<export_dir>/<serving_name>`` watches)::

    <serving_name>/<version>/saved_model.pb, variables/
        assets/labels.txt              one label a line, in target order
        assets/…                       the task's other assets (multi-label: thresholds.tsv)
        assets/runway_cnn.json         backbone, the task's config, preprocessing, top_k, signatures
        assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog warm-up requests
    <serving_name>/<version>.float.tflite, <version>.dynamic_range.tflite   (``--tflite`` only)

A new export gets the next integer version and appears in one ``rename`` of a finished temporary
dir, so TF Serving never sees half a model; ``keep_versions`` then deletes the oldest versions.

Signatures (preprocessing is inside the graph, so clients send raw encoded images; the graph's
``tf.io.decode_image`` ignores EXIF orientation and drops transparency, so clients should send
upright, opaque RGB, as ``inference.predictor.encode_images`` does for files):

- ``serving_default``: ``image_bytes`` (tf.string ``[None]``, JPEG / PNG / GIF / BMP; REST clients
  send ``{"b64": ...}``) → the task's outputs (single-label: ``probabilities`` ``[None, classes]``,
  ``classes`` the top-k label strings, ``scores`` their probabilities).
- ``serving_per_image``: the same input and outputs plus ``valid`` (bool ``[None]``).
- ``predict_images``: float32 ``[None, s, s, 3]`` images in [0, 1] (already resized and cropped)
  → the same outputs as ``serving_default``; another size is an ``InvalidArgument`` error.
- ``embed``: ``image_bytes`` → ``embedding``, the pooled backbone features (retrieval).
- ``feature_vector``: float32 images in [0, 1] → features; what ``--model_name run:`` reuses (at
  any resolution).
- ``explain`` (``image_bytes``) and ``explain_images`` (eval crops), only when the backbone has
  a feature map: ``serving_default``'s outputs plus ``explained`` (int32 ``[None, m]``, the
  label indices the answer gives — the task's :meth:`~runway_cnn.tasks.base.Task.explained`,
  -1 padding) and ``heatmaps`` (float32 ``[None, m, s, s]``, their Grad-CAM maps over the eval
  crop, :mod:`runway_cnn.export.gradcam`). The metadata's ``signatures.explain`` lists them, or
  is null for a backbone with pooled features only.

No signature runs the model on an empty batch (an empty request, or one whose images are all
undecodable): :func:`call_nonempty` pads it, since some CPU builds of TensorFlow reject 0-image
convolutions.

Per-image errors. An input that is not an image — text, an empty string, a truncated JPEG — makes
``serving_default`` (and ``embed``) fail the whole request with the decoder's ``InvalidArgument``
error (``Unknown image file format``, ``Input is empty``, ``Invalid JPEG data``): HTTP 400 with
``{"error": ...}`` from TF Serving's REST API, ``INVALID_ARGUMENT`` over gRPC. No process crashes
and the next request is served normally. A caller that wants the good images of a mixed batch
asks for ``serving_per_image``: undecodable images are dropped inside the graph (``tf.data``'s
``ignore_errors``), the rest are classified, and every row comes back with ``valid`` telling them
apart; an invalid row has ``valid: false``, zero ``probabilities`` / ``scores`` and empty
``classes``. It is a little slower than ``serving_default`` (10-15 % with EfficientNet-Lite0 on
CPU, see ``bench/results_serving.md``).

``python -m runway_cnn.export`` re-exports a finished run (:mod:`runway_cnn.export.reexport`),
with ``--tflite`` also as ``.tflite`` files (:mod:`runway_cnn.export.tflite`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from runway_cnn.data.preprocessing import PreprocessingSpec, central_crop, decode_image
from runway_cnn.errors import CheckpointError, RunwayError, first_line
from runway_cnn.export.gradcam import gradcam, logits_from_feature_map
from runway_cnn.export.tflite import TFLITE_VARIANTS, tflite_path
from runway_cnn.export.warmup import WARMUP_FILE, warmup_requests, write_warmup_file
from runway_cnn.export_dir import (
    IMAGE_BYTES,
    LEARNED_FILE,
    META_FILE,
    is_export,
    next_version,
    read_assets,
    resolve_export,
    version_dirs,
)

_TMP_PREFIX = ".tmp-export-"  # + "<pid>-<random>": an export being written
BYTES_SIGNATURES = ("serving_default", "serving_per_image", "embed")
IMAGE_SIGNATURES = ("predict_images", "feature_vector")
EXPLAIN_SIGNATURES = ("explain", "explain_images")  # backbones with a feature map only
# (signature, batch size) of the warm-up requests TF Serving replays when it loads a version


# --- graph-side preprocessing ------------------------------------------------------------------

def decode_batch(image_bytes: tf.Tensor, spec: PreprocessingSpec) -> tf.Tensor:
    """Encoded images ``[n]`` → eval-transformed float images ``[n, s, s, 3]``; an undecodable
    one raises the decoder's ``InvalidArgumentError``."""
    size = spec.image_size
    return tf.map_fn(lambda b: central_crop(decode_image(b), spec), image_bytes,
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def decode_batch_per_image(image_bytes: tf.Tensor,
                           spec: PreprocessingSpec) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded images ``[n]`` → (the decodable ones' float images ``[m, s, s, 3]`` in input order,
    ``valid`` bool ``[n]``). Never raises for a bad image: ``ignore_errors`` drops it."""
    size = spec.image_size
    n = tf.shape(image_bytes)[0]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(n), image_bytes))
    ds = ds.map(lambda i, b: (i, central_crop(decode_image(b), spec)))
    ds = ds.ignore_errors(log_warning=False)
    # one sentinel row so that batching never sees an empty dataset (every image invalid)
    ds = ds.concatenate(tf.data.Dataset.from_tensors((tf.constant(-1, tf.int32),
                                                      tf.zeros([size, size, 3], tf.float32))))
    index, images = ds.batch(tf.cast(n + 1, tf.int64)).get_single_element()
    index, images = index[:-1], images[:-1]
    valid = tf.scatter_nd(index[:, None], tf.ones_like(index, tf.bool), [n])
    return images, valid


def call_nonempty(fn, images: tf.Tensor):
    """``fn(images)`` for a batch that may hold no image: an empty batch is padded with one zero
    image whose output rows are dropped (TF's CPU convolution and BatchNorm kernels reject
    0-image batches on some CPUs), so no signature ever sends an empty batch to the model."""
    n = tf.shape(images)[0]
    padded = tf.cond(n > 0, lambda: images,
                     lambda: tf.zeros(tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype))
    return tf.nest.map_structure(lambda t: t[:n], fn(padded))


def check_image_size(images: tf.Tensor, image_size: int) -> tf.Tensor:
    """``images`` if they are ``[n, image_size, image_size, 3]``, else an ``InvalidArgument``
    error naming the expected shape (a loaded signature accepts any size silently)."""
    expected = tf.constant([image_size, image_size, 3])
    check = tf.debugging.assert_equal(
        tf.shape(images)[1:], expected,
        message=f"images must be [n, {image_size}, {image_size}, 3] float32 in [0, 1] (the "
                "eval crop); got another shape")
    with tf.control_dependencies([check]):
        return tf.identity(images)


def expand_rows(value: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Rows of the valid images (in order) → one row per input, zeros / "" where not valid."""
    count = tf.shape(value)[0]
    position = tf.where(valid, tf.cumsum(tf.cast(valid, tf.int32)) - 1, count)
    filler = tf.zeros(tf.concat([[1], tf.shape(value)[1:]], 0), value.dtype)
    return tf.gather(tf.concat([value, filler], 0), position)


# --- SavedModel -------------------------------------------------------------------------------

def _archive(model: keras.Model, backbone, task, top_k: int) -> keras.export.ExportArchive:
    """The signatures of the export. The model runs inside three ``tf.function`` s (predict,
    features, explain), each called by every signature that needs it, so the model is traced
    once per function rather than once per signature (saving traces each function once more)."""
    spec = backbone.preprocessing
    size = spec.image_size

    @tf.function(autograph=False)
    def predict_images(images):
        return call_nonempty(lambda x: task.predict_outputs(model(x, training=False), top_k),
                             images)

    @tf.function(autograph=False)
    def features(images):
        return call_nonempty(lambda x: backbone.model(x, training=False), images)

    def per_image(image_bytes):
        images, valid = decode_batch_per_image(image_bytes, spec)
        outputs = {k: expand_rows(v, valid) for k, v in predict_images(images).items()}
        return {**outputs, "valid": valid}

    archive = keras.export.ExportArchive()
    archive.track(model)
    image_spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    bytes_spec = tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)
    archive.add_endpoint("serving_default", lambda image_bytes: predict_images(
        decode_batch(image_bytes, spec)), input_signature=[bytes_spec])
    archive.add_endpoint("serving_per_image", per_image, input_signature=[bytes_spec])
    archive.add_endpoint("predict_images", lambda images: predict_images(
        check_image_size(images, size)), input_signature=[image_spec])
    archive.add_endpoint("embed", lambda image_bytes: {"embedding": features(
        decode_batch(image_bytes, spec))}, input_signature=[bytes_spec])
    # any size: a convolutional backbone reused by run: may run at another resolution
    archive.add_endpoint("feature_vector", features, input_signature=[image_spec])
    split = logits_from_feature_map(model, backbone)
    if split is not None:
        feature_map, to_logits = split

        @tf.function(autograph=False)
        def explain_images(images):
            def run(x):
                maps = feature_map(x)
                logits = to_logits(maps)
                explained = task.explained(logits)
                return {**task.predict_outputs(logits, top_k), "explained": explained,
                        "heatmaps": gradcam(maps, to_logits, explained, size)}
            return call_nonempty(run, images)

        archive.add_endpoint("explain", lambda image_bytes: explain_images(
            decode_batch(image_bytes, spec)), input_signature=[bytes_spec])
        archive.add_endpoint("explain_images", lambda images: explain_images(
            check_image_size(images, size)), input_signature=[image_spec])
    return archive


def export_model(model: keras.Model, backbone, task, export_dir: str | Path, serving_name: str,
                 top_k: int = 5, version: int | None = None, keep_versions: int | None = None,
                 warmup: bool = True, refit: dict | None = None) -> Path:
    """Writes the SavedModel (with warm-up requests unless ``warmup=False``) as the next version,
    or ``version``; with ``keep_versions`` deletes all but the newest that many versions;
    ``refit`` (the run's ``metrics.json`` section) goes into the metadata, its
    ``content_keys`` (of the photos the model learned from) into ``assets/learned_from.txt``.
    Returns the version dir."""
    if keep_versions is not None and keep_versions < 1:
        raise RunwayError(f"--keep_versions {keep_versions}: keep at least 1 version")
    spec = backbone.preprocessing
    archive = _archive(model, backbone, task, top_k)
    explains = backbone.feature_map is not None
    model_dir = Path(export_dir) / serving_name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_exports(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=model_dir))
    try:
        _make_readable(tmp)  # mkdtemp makes it 0700: a model server under another user can't read
        archive.write_out(str(tmp), verbose=False)
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        for name, text in task.assets().items():
            (assets / name).write_text(text)
        meta = {"backbone": backbone.name, "backbone_source": backbone.source,
                "feature_dim": backbone.feature_dim, "top_k": top_k, "task": task.config(),
                "preprocessing": {"image_size": spec.image_size,
                                  "crop_fraction": spec.crop_fraction},
                "signatures": {"bytes_input": IMAGE_BYTES, "bytes": list(BYTES_SIGNATURES),
                               "images": list(IMAGE_SIGNATURES),
                               "per_image_errors": "serving_per_image",
                               "explain": list(EXPLAIN_SIGNATURES) if explains else None},
                "refit": refit and {k: v for k, v in refit.items() if k != "content_keys"}}
        (assets / META_FILE).write_text(json.dumps(meta, indent=2))
        if refit and "content_keys" in refit:
            (assets / LEARNED_FILE).write_text("\n".join(refit["content_keys"]) + "\n")
        if warmup:
            write_warmup_file(tmp / "assets.extra" / WARMUP_FILE,
                              warmup_requests(serving_name, spec.image_size))
        final = _publish(tmp, model_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_versions is not None:
        prune_versions(model_dir, keep_versions)
    return final


def remove_abandoned_exports(model_dir: Path) -> list[Path]:
    """Deletes the temporary dirs of exports whose process is gone (killed mid-export); an
    export still being written by a live process is left alone. Returns the deleted dirs."""
    removed = []
    for tmp in model_dir.glob(f"{_TMP_PREFIX}*"):
        pid = tmp.name[len(_TMP_PREFIX):].split("-")[0]
        if tmp.is_dir() and not (pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _make_readable(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def _publish(tmp: Path, model_dir: Path, version: int | None) -> Path:
    """Renames the finished temporary dir to its version dir; when no version was asked for and
    a concurrent export took the number, takes the next one."""
    while True:
        number = version or next_version(model_dir)
        final = model_dir / str(number)
        try:
            os.rename(tmp, final)
            return final
        except OSError:
            if version is not None or not final.exists():
                raise


def prune_versions(model_dir: str | Path, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` of the version dirs of ``model_dir`` that are this
    package's exports (:func:`is_export`; any other folder is left alone), and their
    ``.tflite`` files; returns the deleted version dirs."""
    if keep < 1:
        raise RunwayError(f"--keep_versions {keep}: keep at least 1 version")
    model_dir = Path(model_dir)
    old = [p for p in version_dirs(model_dir) if is_export(p)][:-keep]
    for version_dir in old:
        for variant in TFLITE_VARIANTS:
            tflite_path(version_dir, variant).unlink(missing_ok=True)
        shutil.rmtree(version_dir)
    return old


def load_export(path: str | Path):
    """``tf.saved_model.load`` of :func:`resolve_export`'s answer, with its labels attached."""
    version_dir = resolve_export(path)
    labels, meta = read_assets(version_dir)
    if not (version_dir / "variables" / "variables.index").is_file():
        raise CheckpointError(f"{version_dir} is a broken export: variables/ is missing or empty; "
                              "export the run again (python -m runway_cnn.export --train_dir ...)")
    try:
        loaded = tf.saved_model.load(str(version_dir))
    except Exception as error:  # noqa: BLE001 - a truncated or damaged SavedModel
        raise CheckpointError(f"{version_dir} is a broken export (cannot load it: "
                              f"{first_line(error)}); export the run again (python -m "
                              "runway_cnn.export --train_dir ...)") from error
    loaded.labels, loaded.meta = labels, meta
    loaded.version_dir = version_dir
    return loaded
