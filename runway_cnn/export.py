"""SavedModel export for TF Serving: ``<export_dir>/<serving_name>/<version>/``, written atomically.

Layout (what ``tensorflow_model_server --model_base_path=<export_dir>/<serving_name>`` watches)::

    <serving_name>/<version>/saved_model.pb, variables/
        assets/labels.txt              one label a line, in class-id order
        assets/runway_cnn.json         backbone, task, class names, preprocessing, top_k, signatures
        assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog warm-up requests
    <serving_name>/<version>.float.tflite, <version>.dynamic_range.tflite   (``--tflite`` only)

A new export gets the next integer version and appears in one ``rename`` of a finished temporary
dir, so TF Serving never sees half a model; ``keep_versions`` then deletes the oldest versions.

Signatures (preprocessing is inside the graph, so clients send raw encoded images; the graph's
``tf.io.decode_image`` ignores EXIF orientation and drops transparency, so clients should send
upright, opaque RGB, as ``serving.encode_images`` does for files):

- ``serving_default``: ``image_bytes`` (tf.string ``[None]``, JPEG / PNG / GIF / BMP; REST clients
  send ``{"b64": ...}``) → the task's outputs (single-label: ``probabilities`` ``[None, classes]``,
  ``classes`` the top-k label strings, ``scores`` their probabilities).
- ``serving_per_image``: the same input and outputs plus ``valid`` (bool ``[None]``).
- ``predict_images``: float32 ``[None, s, s, 3]`` images in [0, 1] (already resized and cropped)
  → the same outputs as ``serving_default``; another size is an ``InvalidArgument`` error.
- ``embed``: ``image_bytes`` → ``embedding``, the pooled backbone features (retrieval).
- ``feature_vector``: float32 images in [0, 1] → features; what ``--init_from_run`` reuses (at
  any resolution).

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

``python -m runway_cnn.export --train_dir T [--export_dir E] [--serving_name N] [--keep_versions K]
[--tflite]`` re-exports a finished run (rebuilt by :func:`runway_cnn.restore.restore_run`);
``--tflite`` also writes float and dynamic-range-quantised ``.tflite`` files (float32 images
``[1, s, s, 3]`` in [0, 1] → ``probabilities``) and prints their size and their top-1 agreement
with the SavedModel on the run's validation split.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from runway_cnn import cli
from runway_cnn.errors import CheckpointError, RunwayError, first_line
from runway_cnn.runfiles import check_output_dir, read_json
from runway_cnn.preprocessing import PreprocessingSpec, central_crop, decode_image

META_FILE = "runway_cnn.json"
LABELS_FILE = "labels.txt"
WARMUP_FILE = "tf_serving_warmup_requests"
IMAGE_BYTES = "image_bytes"  # the input name of every bytes signature
_TMP_PREFIX = ".tmp-export-"  # + "<pid>-<random>": an export being written
BYTES_SIGNATURES = ("serving_default", "serving_per_image", "embed")
IMAGE_SIGNATURES = ("predict_images", "feature_vector")
TFLITE_VARIANTS = ("float", "dynamic_range")
# (signature, batch size) of the warm-up requests TF Serving replays when it loads a version
WARMUP_REQUESTS = (("serving_default", 1), ("serving_default", 8), ("serving_per_image", 1),
                   ("embed", 1))


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

def _version_dirs(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        return []
    return sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                  key=lambda p: int(p.name))


def next_version(model_dir: Path) -> int:
    versions = _version_dirs(model_dir)
    return int(versions[-1].name) + 1 if versions else 1


def _archive(model: keras.Model, backbone, task, top_k: int) -> keras.export.ExportArchive:
    spec = backbone.preprocessing
    size = spec.image_size

    def predict_images(images):
        return call_nonempty(lambda x: task.predict_outputs(model(x, training=False), top_k),
                             images)

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
    # any size: a convolutional backbone reused by --init_from_run may run at another resolution
    archive.add_endpoint("feature_vector", features, input_signature=[image_spec])
    return archive


def export_model(model: keras.Model, backbone, task, export_dir: str | Path, serving_name: str,
                 top_k: int = 5, version: int | None = None, keep_versions: int | None = None,
                 warmup: bool = True) -> Path:
    """Writes the SavedModel (with warm-up requests unless ``warmup=False``) as the next version,
    or ``version``; with ``keep_versions`` deletes all but the newest that many versions.
    Returns the version dir."""
    if keep_versions is not None and keep_versions < 1:
        raise RunwayError(f"--keep_versions {keep_versions}: keep at least 1 version")
    spec = backbone.preprocessing
    archive = _archive(model, backbone, task, top_k)
    model_dir = Path(export_dir) / serving_name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_exports(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=model_dir))
    try:
        _make_readable(tmp)  # mkdtemp makes it 0700: a model server under another user can't read
        archive.write_out(str(tmp), verbose=False)
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        (assets / LABELS_FILE).write_text("\n".join(task.class_names) + "\n")
        meta = {"backbone": backbone.name, "backbone_source": backbone.source,
                "feature_dim": backbone.feature_dim, "top_k": top_k, **task.config(),
                "preprocessing": {"image_size": spec.image_size,
                                  "crop_fraction": spec.crop_fraction},
                "signatures": {"bytes_input": IMAGE_BYTES, "bytes": list(BYTES_SIGNATURES),
                               "images": list(IMAGE_SIGNATURES),
                               "per_image_errors": "serving_per_image"}}
        (assets / META_FILE).write_text(json.dumps(meta, indent=2))
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
    """Deletes all but the newest ``keep`` version dirs of ``model_dir`` (and their ``.tflite``
    files); returns the deleted version dirs."""
    if keep < 1:
        raise RunwayError(f"--keep_versions {keep}: keep at least 1 version")
    model_dir = Path(model_dir)
    old = _version_dirs(model_dir)[:-keep]
    for version_dir in old:
        for variant in TFLITE_VARIANTS:
            tflite_path(version_dir, variant).unlink(missing_ok=True)
        shutil.rmtree(version_dir)
    return old


def resolve_export(path: str | Path) -> Path:
    """A version dir as is; a serving-name dir → its newest version; an export base with one
    model, or a train dir (via its metrics.json or ``export/``) → that model's newest version."""
    path = Path(os.path.abspath(path))
    if (path / "saved_model.pb").exists():
        return path
    if not path.exists():
        raise CheckpointError(f"model path {path} does not exist")
    metrics = path / "metrics.json"
    if metrics.exists():
        recorded = read_json(metrics, fix="name the export version dir instead, or run the "
                                          "finetune command again to rewrite it").get("export_path")
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


def read_assets(version_dir: Path) -> tuple[list[str], dict]:
    """An export's labels and ``runway_cnn.json`` metadata."""
    assets = version_dir / "assets"
    try:
        labels = (assets / LABELS_FILE).read_text().splitlines()
        meta = json.loads((assets / META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{version_dir} is not a runway_cnn export (cannot read "
                              f"assets/{LABELS_FILE} and assets/{META_FILE}: {error})") from error
    return labels, meta


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


# --- warm-up requests -------------------------------------------------------------------------

def warmup_image(image_size: int, seed: int = 0) -> bytes:
    """A JPEG of smooth random colour, a little larger than the model input (so the warm-up runs
    the resize and crop too)."""
    rng = np.random.default_rng(seed)
    h, w = int(image_size * 1.25), int(image_size * 1.5)
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    image = tf.image.resize(coarse[None], [h, w])[0]
    return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8),
                             quality=90).numpy()


def warmup_requests(serving_name: str, image_size: int,
                    requests=WARMUP_REQUESTS) -> list[bytes]:
    """Serialized ``PredictionLog`` records: one ``PredictRequest`` of the warm-up JPEG per
    (signature, batch size)."""
    image = warmup_image(image_size)
    return [predict_log_record(serving_name, signature, {IMAGE_BYTES: [image] * batch})
            for signature, batch in requests]


def predict_log_record(serving_name: str, signature: str,
                       inputs: dict[str, list[bytes]]) -> bytes:
    """One serialized ``tensorflow.serving.PredictionLog`` holding a ``PredictRequest``.

    Built with ``tensorflow-serving-api``'s protos when installed (the ``[serving]`` extra);
    without it the same bytes are written by hand from the protos' field numbers, so exports never
    depend on the optional package (tests check the two agree byte for byte)."""
    tensors = {name: tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)])
               for name, values in inputs.items()}
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return _encode_prediction_log(serving_name, signature,
                                      {k: t.SerializeToString() for k, t in tensors.items()})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = serving_name
    request.model_spec.signature_name = signature
    for name, tensor in tensors.items():
        request.inputs[name].CopyFrom(tensor)
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    return log.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _message_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2: strings and sub-messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode_prediction_log(serving_name: str, signature: str,
                           tensors: dict[str, bytes]) -> bytes:
    # ModelSpec{name = 1, signature_name = 3}; PredictRequest{model_spec = 1, inputs = 2 (map
    # entries {key = 1, value = 2})}; PredictLog{request = 1}; PredictionLog{predict_log = 6}
    model_spec = _message_field(1, serving_name.encode()) + _message_field(3, signature.encode())
    request = _message_field(1, model_spec) + b"".join(
        _message_field(2, _message_field(1, name.encode()) + _message_field(2, tensor))
        for name, tensor in tensors.items())
    return _message_field(6, _message_field(1, request))


def write_warmup_file(path: Path, records: list[bytes]) -> None:
    if len(records) > 1000:
        raise ValueError("TF Serving replays at most 1000 warm-up records")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


# --- TFLite -----------------------------------------------------------------------------------

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


# --- re-export of a finished run ----------------------------------------------------------------

@dataclass
class TFLiteReport:
    variant: str
    path: Path
    size_bytes: int
    top1_agreement: float  # share of validation images whose top-1 matches the SavedModel's
    num_images: int
    max_abs_diff: float  # largest probability difference to the SavedModel


@dataclass
class ReexportResult:
    export_path: Path
    saved_model_bytes: int
    tflite: list[TFLiteReport] = field(default_factory=list)
    pruned: list[Path] = field(default_factory=list)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def reexport(train_dir: str | Path, export_dir: str | Path | None = None,
             serving_name: str | None = None, keep_versions: int | None = None,
             tflite: bool = False, top_k: int | None = None,
             batch_size: int = 32) -> ReexportResult:
    """Rebuilds a finished run and exports it again as the next version (by default under the
    base and name it first exported to); with ``tflite``, also converts it and measures the
    TFLite files against the new SavedModel on the run's validation split."""
    from runway_cnn.pipeline import eval_dataset
    from runway_cnn.restore import restore_run

    if keep_versions is not None and keep_versions < 1:
        raise RunwayError(f"--keep_versions {keep_versions}: keep at least 1 version")
    if top_k is not None and top_k < 1:
        raise RunwayError(f"--top_k {top_k}: must be at least 1")
    check_output_dir(export_dir, "--export_dir")
    run = restore_run(train_dir)
    export_dir = Path(export_dir) if export_dir else run.export_base
    model_dir = export_dir / (serving_name or run.serving_name)
    before = set(_version_dirs(model_dir))
    version_dir = export_model(run.model, run.backbone, run.task, export_dir,
                               serving_name or run.serving_name,
                               top_k=top_k or run.config.get("top_k") or 5,
                               keep_versions=keep_versions)
    result = ReexportResult(version_dir, _dir_size(version_dir),
                            pruned=sorted(before - set(_version_dirs(model_dir))))
    if tflite:
        paths = export_tflite(run.model, run.task, run.backbone.preprocessing.image_size,
                              version_dir)
        split = run.split("validation")
        batches = eval_dataset(split.paths, None, run.backbone.preprocessing, batch_size,
                               cache=False)
        images = np.concatenate(list(batches.as_numpy_iterator()))
        served = tf.saved_model.load(str(version_dir)).signatures["predict_images"]
        reference = np.concatenate([served(images=tf.constant(images[i:i + batch_size]))
                                    ["probabilities"].numpy()
                                    for i in range(0, len(images), batch_size)])
        for variant, path in paths.items():
            probabilities = tflite_probabilities(path, images)
            agree = probabilities.argmax(-1) == reference.argmax(-1)
            result.tflite.append(TFLiteReport(
                variant, path, path.stat().st_size, float(agree.mean()), len(images),
                float(np.abs(probabilities - reference).max())))
    return result


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runway_cnn.export",
        description="Re-export a finished runway_cnn run as the next SavedModel version for TF "
                    "Serving (optionally with TFLite files).")
    parser.add_argument("--train_dir", required=True, help="the run's train dir")
    parser.add_argument("--export_dir", help="export base dir (default: where the run exported)")
    parser.add_argument("--serving_name", help="model name under export_dir (default: the run's)")
    parser.add_argument("--keep_versions", type=int,
                        help="after exporting, delete all but the newest N versions")
    parser.add_argument("--top_k", type=int, help="labels per image (default: the run's top_k)")
    parser.add_argument("--tflite", action="store_true",
                        help="also write float and dynamic-range-quantised .tflite files and "
                             "print their size and top-1 agreement with the SavedModel on the "
                             "validation split")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> ReexportResult:
    args = parse_args(argv)
    result = reexport(args.train_dir, args.export_dir, args.serving_name, args.keep_versions,
                      args.tflite, args.top_k)
    print(f"export: {result.export_path}  (SavedModel {_megabytes(result.saved_model_bytes)})")
    for path in result.pruned:
        print(f"pruned: {path}")
    for r in result.tflite:
        print(f"tflite {r.variant:13s} {_megabytes(r.size_bytes):>9s}  top-1 agreement with the "
              f"SavedModel {r.top1_agreement:6.1%} ({r.num_images} validation images, max "
              f"|p - p_savedmodel| {r.max_abs_diff:.4f})  {r.path}")
    return result


if __name__ == "__main__":
    cli.run(main)
