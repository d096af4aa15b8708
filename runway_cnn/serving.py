"""Using an export: locally (:class:`Predictor`) or on TF Serving (:class:`Client`), with the same
answers, plus the TF Serving ``models.config`` writer.

    Predictor("exports/looks").predict(["a.jpg", b"<jpeg bytes>", array])
    Client("localhost", "looks").predict(["a.jpg"])                    # REST on 8501
    Client("localhost:8500", "looks", protocol="grpc").predict(["a.jpg"])
    → [{"labels": ["dress", "skirt", ...], "scores": [0.91, 0.05, ...]}, ...]

Images are file paths, encoded bytes (JPEG / PNG / GIF / BMP) or arrays (``[h, w, 3]`` uint8, or
float in [0, 1]; sent as PNG); the model decodes, resizes and crops them itself.

Undecodable images (see ``runway_cnn.export``): by default the whole request fails —
:class:`Predictor` raises :class:`~runway_cnn.errors.DataError` naming the bad images, the
:class:`Client` a :class:`ServingRequestError` carrying TF Serving's ``InvalidArgument`` message
(HTTP 400). With ``per_image_errors=True`` the ``serving_per_image`` signature is used and each
bad image's result is ``{"labels": [], "scores": [], "error": "..."}`` while the others are
classified normally.

REST requests are TF Serving's row format, ``{"signature_name": ..., "instances": [{"b64": ...},
...]}`` to ``POST /v1/models/<name>[/versions/<v>]:predict``; answers are ``{"predictions": [{
"probabilities": [...], "classes": [...], "scores": [...]}, ...]}`` or ``{"error": "..."}``. gRPC
requests are ``tensorflow.serving.PredictRequest``s (input ``image_bytes``, a ``DT_STRING``
tensor ``[n]``) sent to ``PredictionService/Predict``; they need ``tensorflow-serving-api`` (the
``[serving]`` extra). Timeouts raise :class:`ServingTimeout`, a server that cannot be reached
:class:`ServingUnavailable`, an error answer :class:`ServingRequestError`.

CLI::

    python -m runway_cnn.serving config --export_dir exports/ [--output F] [--base_path /models]
    python -m runway_cnn.serving predict --host localhost --model looks [--protocol grpc] IMAGE...
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runway_cnn import cli, data
from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.runfiles import check_output_file
from runway_cnn.export import IMAGE_BYTES, _version_dirs, load_export
from runway_cnn.preprocessing import PreprocessingSpec, central_crop

DEFAULT_PORTS = {"rest": 8501, "grpc": 8500}
INVALID_IMAGE = "not a decodable image (JPEG, PNG, GIF or BMP expected; empty or truncated?)"
_GRPC_MESSAGE_LIMIT = 256 * 1024 * 1024


class ServingError(RunwayError):
    """A TF Serving request that did not give predictions."""

    def __init__(self, message: str, status: int | str | None = None):
        super().__init__(message)
        self.status = status  # HTTP status (REST) or gRPC status code name


class ServingTimeout(ServingError):
    """No answer within the client's timeout (or the server's own deadline ran out)."""


class ServingUnavailable(ServingError):
    """The server cannot be reached (refused connection, DNS, unavailable)."""


class ServingRequestError(ServingError):
    """The server answered with an error: a bad input (HTTP 400 / INVALID_ARGUMENT), an unknown
    model or signature (404 / NOT_FOUND), a server failure (5xx)."""


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
            encoded.append(data.encoded_as_trained(path))  # upright, opaque RGB as in training
            names.append(str(path))
        elif isinstance(item, np.ndarray):
            encoded.append(_array_to_png(item, f"image #{i}"))
            names.append(f"image #{i} (array)")
        else:
            raise DataError(f"image #{i}: a {type(item).__name__} is not an image (give a path, "
                            "encoded bytes or an array)")
    return encoded, names


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def results_from_outputs(outputs: dict[str, np.ndarray]) -> list[dict]:
    """Signature outputs (one row per image) → one ``{"labels", "scores"}`` dict per image;
    rows that ``valid`` marks bad → ``{"labels": [], "scores": [], "error": ...}``."""
    classes, scores = outputs["classes"], outputs["scores"]
    valid = outputs.get("valid")
    results = []
    for i in range(len(classes)):
        if valid is not None and not bool(valid[i]):
            results.append({"labels": [], "scores": [], "error": INVALID_IMAGE})
        else:
            results.append({"labels": [_text(c) for c in classes[i]],
                            "scores": [float(s) for s in scores[i]]})
    return results


def _signature(per_image_errors: bool) -> str:
    return "serving_per_image" if per_image_errors else "serving_default"


# --- local --------------------------------------------------------------------------------------

class Predictor:
    """The local Python API over an export (a version dir, a serving-name dir, an export base with
    one model, or a train dir): the same answers as TF Serving gives a :class:`Client`."""

    def __init__(self, path: str | Path, batch_size: int = 32):
        self.model = load_export(path)
        self.version_dir: Path = self.model.version_dir
        self.labels: list[str] = self.model.labels
        self.meta: dict = self.model.meta
        self.batch_size = batch_size

    def _run(self, signature: str, encoded: list[bytes]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        fn = self.model.signatures[signature]
        parts = [{k: v.numpy() for k, v in fn(**{IMAGE_BYTES: tf.constant(
                  encoded[i:i + self.batch_size], tf.string)}).items()}
                 for i in range(0, len(encoded), self.batch_size)]
        if not parts:
            raise DataError("no images given")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

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
        """The raw signature outputs (``probabilities``, ``classes``, ``scores`` [, ``valid``])."""
        return self._call(_signature(per_image_errors), images)

    def predict(self, images, per_image_errors: bool = False) -> list[dict]:
        """One ``{"labels": [...top-k], "scores": [...]}`` per image, best first."""
        return results_from_outputs(self.outputs(images, per_image_errors))

    def embed(self, images) -> np.ndarray:
        """Pooled backbone features ``[n, feature_dim]`` (the ``embed`` signature)."""
        return self._call("embed", images)["embedding"]

    @property
    def task(self) -> str:
        return self.meta.get("task", "single_label")

    @property
    def spec(self) -> PreprocessingSpec:
        """The export's eval transform (input size, crop fraction)."""
        pre = self.meta["preprocessing"]
        return PreprocessingSpec(int(pre["image_size"]), float(pre["crop_fraction"]))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[h, w, 3]`` → the eval crop as float32 in [0, 1], exactly as the training
        pipeline makes it (including its uint8 rounding)."""
        import tensorflow as tf

        crop = central_crop(tf.constant(image), self.spec).numpy()
        return np.round(crop * 255.0).astype(np.float32) / 255.0

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float32 ``[n, s, s, 3]`` eval crops in [0, 1] → ``[n, classes]`` probabilities (the
        ``predict_images`` signature)."""
        import tensorflow as tf

        size = self.spec.image_size
        images = check_unit_floats(images, "images")
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise DataError(f"images of shape {images.shape}: the model takes [n, {size}, {size}, "
                            "3] eval crops (see Predictor.crop)")
        if not len(images):
            raise DataError("no images given")
        out = self.model.signatures["predict_images"](images=tf.constant(images, tf.float32))
        return out["probabilities"].numpy()


# --- TF Serving client --------------------------------------------------------------------------

def _host_port(host: str, default_port: int) -> tuple[str, str, int]:
    """``host``, ``host:port`` or ``http(s)://host[:port]`` → (scheme, host, port)."""
    scheme = "http"
    if "://" in host:
        scheme, host = host.split("://", 1)
    host = host.rstrip("/")
    if host.startswith("[") and "]" in host:  # [ipv6]:port
        name, _, rest = host[1:].partition("]")
        return scheme, f"[{name}]", int(rest[1:]) if rest.startswith(":") else default_port
    if host.count(":") == 1:
        name, port = host.split(":")
        return scheme, name, int(port)
    return scheme, host, default_port


class Client:
    """Predictions from a model on TF Serving, as :class:`Predictor` gives them locally.

    ``host`` is ``name``, ``name:port`` or ``http(s)://name:port`` (default ports: REST 8501,
    gRPC 8500); ``version`` pins a model version (default: the newest the server has);
    ``timeout`` (seconds) bounds every request.
    """

    def __init__(self, host: str, serving_name: str, protocol: str = "rest",
                 timeout: float = 10.0, version: int | None = None):
        if protocol not in DEFAULT_PORTS:
            raise RunwayError(f"protocol {protocol!r}: use 'rest' or 'grpc'")
        self.protocol, self.serving_name, self.timeout, self.version = (
            protocol, serving_name, float(timeout), version)
        self.scheme, self.hostname, self.port = _host_port(host, DEFAULT_PORTS[protocol])
        self._session = None
        self._channel = None
        self._stub = None

    # -- REST --
    @property
    def url(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return (f"{self.scheme}://{self.hostname}:{self.port}/v1/models/{self.serving_name}"
                f"{version}:predict")

    @staticmethod
    def rest_body(encoded: Sequence[bytes], signature: str = "serving_default") -> dict:
        """TF Serving's row-format request: one ``{"b64": ...}`` instance per image."""
        return {"signature_name": signature,
                "instances": [{"b64": base64.b64encode(b).decode("ascii")} for b in encoded]}

    @staticmethod
    def parse_rest_response(status: int, text: str, url: str = "") -> dict[str, np.ndarray]:
        """A TF Serving REST answer → outputs by name (one row per image), or the error it
        carries as a :class:`ServingError`."""
        where = f"{url}: " if url else ""
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if status != 200:
            message = body.get("error") if isinstance(body, dict) else None
            # TF's messages go on with graph node lines: the first line says what went wrong
            message = (str(message).strip().splitlines() or [""])[0] if message else \
                (" ".join(text.split())[:300] or "(empty body)")
            kind = {504: ServingTimeout, 503: ServingUnavailable}.get(status, ServingRequestError)
            raise kind(f"{where}HTTP {status}: {message}", status)
        if not isinstance(body, dict) or "predictions" not in body:
            raise ServingRequestError(f"{where}not a TF Serving predict answer: "
                                      f"{text.strip()[:200]!r}", status)
        rows = body["predictions"]
        if rows and isinstance(rows[0], dict):
            return {k: np.array([row[k] for row in rows]) for k in rows[0]}
        return {"outputs": np.array(rows)}  # a signature with a single output

    def _rest(self, encoded: list[bytes], signature: str) -> dict[str, np.ndarray]:
        import requests

        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.post(self.url, json=self.rest_body(encoded, signature),
                                          timeout=self.timeout)
        except requests.Timeout as error:
            raise ServingTimeout(f"{self.url}: no answer within {self.timeout:g} s") from error
        except requests.ConnectionError as error:
            raise ServingUnavailable(f"{self.url}: cannot connect ({first_line(error)})") \
                from error
        return self.parse_rest_response(response.status_code, response.text, self.url)

    # -- gRPC --
    def grpc_request(self, encoded: Sequence[bytes], signature: str = "serving_default"):
        """The ``tensorflow.serving.PredictRequest`` for ``encoded`` images."""
        import tensorflow as tf
        predict_pb2 = _serving_api("predict_pb2")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.serving_name
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        request.inputs[IMAGE_BYTES].CopyFrom(
            tf.make_tensor_proto(list(encoded), dtype=tf.string, shape=[len(encoded)]))
        return request

    def _grpc(self, encoded: list[bytes], signature: str) -> dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf

        target = f"{self.hostname}:{self.port}"
        if self._stub is None:
            service = _serving_api("prediction_service_pb2_grpc")
            self._channel = grpc.insecure_channel(target, options=[
                ("grpc.max_send_message_length", _GRPC_MESSAGE_LIMIT),
                ("grpc.max_receive_message_length", _GRPC_MESSAGE_LIMIT)])
            self._stub = service.PredictionServiceStub(self._channel)
        try:
            response = self._stub.Predict(self.grpc_request(encoded, signature),
                                          timeout=self.timeout)
        except grpc.RpcError as error:
            code, details = error.code(), ((error.details() or "").strip().splitlines()
                                           or [""])[0]
            kind = {grpc.StatusCode.DEADLINE_EXCEEDED: ServingTimeout,
                    grpc.StatusCode.UNAVAILABLE: ServingUnavailable}.get(code, ServingRequestError)
            if kind is ServingTimeout:
                details = f"no answer within {self.timeout:g} s ({details})"
            raise kind(f"grpc://{target} {self.serving_name}: {code.name}: {details}",
                       code.name) from error
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    # -- both --
    def call(self, images, signature: str) -> dict[str, np.ndarray]:
        """Outputs of a bytes signature (``serving_default``, ``serving_per_image``, ``embed``)."""
        encoded, _ = encode_images(images)
        if not encoded:
            raise DataError("no images given")
        send = self._rest if self.protocol == "rest" else self._grpc
        return send(encoded, signature)

    def outputs(self, images, per_image_errors: bool = False) -> dict[str, np.ndarray]:
        return self.call(images, _signature(per_image_errors))

    def predict(self, images, per_image_errors: bool = False) -> list[dict]:
        """One ``{"labels": [...top-k], "scores": [...]}`` per image, like ``Predictor.predict``."""
        return results_from_outputs(self.outputs(images, per_image_errors))

    def embed(self, images) -> np.ndarray:
        outputs = self.call(images, "embed")
        return np.asarray(outputs.get("embedding", outputs.get("outputs")), np.float32)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._channel is not None:
            self._channel.close()
        self._session = self._channel = self._stub = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serving_api(module: str):
    import importlib
    try:
        return importlib.import_module(f"tensorflow_serving.apis.{module}")
    except ImportError as error:
        raise RunwayError("gRPC needs tensorflow-serving-api: pip install 'runway_cnn[serving]' "
                          "(or use protocol='rest')") from error


# --- models.config ------------------------------------------------------------------------------

def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # " and \\ escaped: valid protobuf text format


def model_dirs(export_dir: str | Path) -> list[Path]:
    """The model dirs (``<export_dir>/<name>`` holding numbered versions) under an export base."""
    base = Path(export_dir)
    if not base.is_dir():
        raise RunwayError(f"--export_dir {base} is not a directory")
    models = sorted(p for p in base.iterdir() if p.is_dir() and _version_dirs(p))
    if not models:
        raise RunwayError(f"--export_dir {base} holds no exported model "
                          "(<name>/<version>/saved_model.pb)")
    return models


def models_config(export_dir: str | Path, base_path: str | None = None) -> str:
    """TF Serving's ``--model_config_file`` text (a ``ModelServerConfig``) serving every model
    under ``export_dir``; ``base_path`` replaces the export dir in the paths (e.g. ``/models``,
    where a docker container mounts it)."""
    lines = ["model_config_list {"]
    for model in model_dirs(export_dir):
        path = f"{base_path.rstrip('/')}/{model.name}" if base_path else str(model.resolve())
        lines += ["  config {", f"    name: {_quote(model.name)}",
                  f"    base_path: {_quote(path)}", '    model_platform: "tensorflow"', "  }"]
    return "\n".join(lines + ["}"]) + "\n"


def write_models_config(export_dir: str | Path, output: str | Path | None = None,
                        base_path: str | None = None) -> Path:
    check_output_file(output, "--output")
    output = Path(output) if output else Path(export_dir) / "models.config"
    text = models_config(export_dir, base_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".tmp-{output.name}")
    tmp.write_text(text)
    os.replace(tmp, output)
    return output


# --- CLI ----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runway_cnn.serving",
                                     description="TF Serving helpers for runway_cnn exports.")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write a models.config for every model under "
                                                "an export dir")
    config.add_argument("--export_dir", required=True, help="export base dir")
    config.add_argument("--output", help="where to write it (default: <export_dir>/models.config)")
    config.add_argument("--base_path", help="the export dir as the server sees it, e.g. /models "
                                            "in docker (default: its absolute local path)")
    predict = commands.add_parser("predict", help="classify images with a model on TF Serving")
    predict.add_argument("--host", required=True, help="host, host:port or http://host:port")
    predict.add_argument("--model", required=True, help="the model's serving name")
    predict.add_argument("--protocol", choices=tuple(DEFAULT_PORTS), default="rest")
    predict.add_argument("--version", type=int, help="model version (default: the newest)")
    predict.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    predict.add_argument("--per_image_errors", action="store_true",
                         help="report undecodable images one by one instead of failing")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    return parser.parse_args(argv)


def format_result(name: str, result: dict) -> str:
    if "error" in result:
        return f"{name}: error: {result['error']}"
    return f"{name}: " + ", ".join(f"{label} {score:.3f}"
                                   for label, score in zip(result["labels"], result["scores"]))


def main(argv: list[str] | None = None, out=None) -> None:
    out = out or sys.stdout
    args = parse_args(argv)
    if args.command == "config":
        path = write_models_config(args.export_dir, args.output, args.base_path)
        names = ", ".join(p.name for p in model_dirs(args.export_dir))
        print(f"wrote {path} ({names})", file=out)
        return
    with Client(args.host, args.model, args.protocol, args.timeout, args.version) as client:
        results = client.predict(args.images, per_image_errors=args.per_image_errors)
    for name, result in zip(args.images, results):
        print(format_result(name, result), file=out)


if __name__ == "__main__":
    cli.run(main)
