"""Predictions from a model on TF Serving, as :class:`~runway_cnn.inference.predictor.Predictor`
gives them locally.

    Client("localhost", "looks").predict(["a.jpg"])                    # REST on 8501
    Client("localhost:8500", "looks", protocol="grpc").predict(["a.jpg"])

Undecodable images: by default the whole request fails with a :class:`ServingRequestError`
carrying the first line of TF Serving's ``InvalidArgument`` message (HTTP 400); with
``per_image_errors=True`` each bad image gets its ``error`` and the others are classified.

REST requests are TF Serving's row format, ``{"signature_name": ..., "instances": [{"b64": ...},
...]}`` to ``POST /v1/models/<name>[/versions/<v>]:predict``; answers are ``{"predictions": [{
"probabilities": [...], "classes": [...], "scores": [...]}, ...]}`` or ``{"error": "..."}``. gRPC
requests are ``tensorflow.serving.PredictRequest``s (input ``image_bytes``, a ``DT_STRING``
tensor ``[n]``) sent to ``PredictionService/Predict``; they need ``tensorflow-serving-api`` (the
``[serving]`` extra). Timeouts raise :class:`ServingTimeout`, a server that cannot be reached
:class:`ServingUnavailable`, an error answer :class:`ServingRequestError`.
"""
from __future__ import annotations

import base64
import json
from typing import Sequence

import numpy as np

from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.export_dir import IMAGE_BYTES
from runway_cnn.inference.predictor import INVALID_IMAGE, _signature, encode_images
from runway_cnn.tasks import SingleLabelTask, Task

DEFAULT_PORTS = {"rest": 8501, "grpc": 8500}
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
    ``timeout`` (seconds) bounds every request. ``task`` decodes the answers: the model's task
    (``Predictor(export).task``, or ``runway_cnn.tasks.task_from_config`` of the export's
    ``assets/runway_cnn.json``); the default reads single-label answers, whose class names
    travel in the answer itself.
    """

    def __init__(self, host: str, serving_name: str, protocol: str = "rest",
                 timeout: float = 10.0, version: int | None = None, task: Task | None = None):
        self.task = task or SingleLabelTask([])
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
            message = first_line(message) if message else \
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
        return self.task.decode(self.outputs(images, per_image_errors), INVALID_IMAGE)

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
