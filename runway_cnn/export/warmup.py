"""TF Serving warm-up requests: ``assets.extra/tf_serving_warmup_requests``, a TFRecord of
``PredictionLog`` records that TF Serving replays when it loads a version."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from runway_cnn.export_dir import IMAGE_BYTES

WARMUP_FILE = "tf_serving_warmup_requests"


WARMUP_REQUESTS = (("serving_default", 1), ("serving_default", 8), ("serving_per_image", 1),
                   ("embed", 1))


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
