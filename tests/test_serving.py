"""The client side: the local Predictor, the REST and gRPC clients (against stand-ins for TF Serving
that listen on 127.0.0.1 and run the real exported signatures the way TF Serving decodes requests),
recorded answers and errors, models.config and the CLI."""
from __future__ import annotations

import base64
import http.server
import io
import json
import re
import threading
import time
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from runway_cnn import cli
from runway_cnn import serving as serving_cli
from runway_cnn.errors import DataError, RunwayError
from runway_cnn.inference import predictor as serving
from runway_cnn.inference import serving_config
from runway_cnn.inference.client import (Client, ServingRequestError, ServingTimeout,
                                         ServingUnavailable)
from runway_cnn.inference.predictor import Predictor
from helpers import decode_rest_instances, encode_rest_predictions, free_ports, run_signature
from serving_fixtures import CLASSES, bad_inputs, sample_images, shared_run

DATA = Path(__file__).parent / "data" / "serving"
SLOW = 1.0  # seconds the stand-in servers take for the model named "slow"
TIMEOUT = 0.25  # the clients' timeout in the timeout tests


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor(run.export_path)


@pytest.fixture(scope="module")
def files(run):
    return sample_images(run)


# --- what TF Serving does with a REST request ---------------------------------------------------

def input_names(loaded, signature: str) -> list[str]:
    return sorted(loaded.signatures[signature].structured_input_signature[1])


# --- stand-in servers ---------------------------------------------------------------------------

class _RestHandler(http.server.BaseHTTPRequestHandler):
    loaded = None  # set per server class
    seen: list = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, status: int, payload: str, content_type="application/json"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload.encode())))
            self.end_headers()
            self.wfile.write(payload.encode())
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        match = re.fullmatch(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", self.path)
        name = match.group(1) if match else None
        if name == "slow":
            time.sleep(SLOW)
        if name == "proxy":
            return self._reply(502, "<html><body>502 Bad Gateway</body></html>", "text/html")
        if name not in ("looks", "slow"):
            return self._reply(404, json.dumps(
                {"error": f"Servable not found for request: Latest({name})"}))
        signature = body.get("signature_name", "serving_default")
        try:
            inputs = decode_rest_instances(body, input_names(self.loaded, signature))
            outputs = run_signature(self.loaded, signature, inputs)
        except tf.errors.InvalidArgumentError as error:
            return self._reply(400, json.dumps({"error": error.message}))
        self._reply(200, encode_rest_predictions(outputs))


@pytest.fixture(scope="module")
def rest_server(predictor):
    handler = type("Handler", (_RestHandler,), {"loaded": predictor.model, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler.seen
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def grpc_server(predictor):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        seen: list = []

        def Predict(self, request, context):
            self.seen.append(request)
            if request.model_spec.name == "slow":
                time.sleep(SLOW)
            elif request.model_spec.name != "looks":
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found for request: "
                                                         f"Latest({request.model_spec.name})")
            signature = request.model_spec.signature_name or "serving_default"
            inputs = {k: tf.make_ndarray(v).tolist() for k, v in request.inputs.items()}
            try:
                outputs = run_signature(predictor.model, signature, inputs)
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = Servicer()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer.seen
    server.stop(grace=0).wait(5)


def assert_same(results, expected, atol=1e-6):
    """The same labels, and scores equal up to float rounding (batch composition changes the
    last bits of a float32 forward pass)."""
    assert len(results) == len(expected)
    for got, want in zip(results, expected):
        assert got.keys() == want.keys() and got["labels"] == want["labels"]
        assert got.get("error") == want.get("error")
        np.testing.assert_allclose(got["scores"], want["scores"], atol=atol)


# --- local API ----------------------------------------------------------------------------------

def test_predictor_gives_top_k_labels_and_scores(predictor, files):
    results = predictor.predict(files)
    outputs = predictor.outputs(files)
    assert len(results) == len(files)
    for result, probabilities in zip(results, outputs["probabilities"]):
        assert set(result) == {"labels", "scores"}
        assert len(result["labels"]) == 3 and set(result["labels"]) <= set(CLASSES)
        assert result["scores"] == sorted(result["scores"], reverse=True)
        best = int(np.argmax(probabilities))
        assert result["labels"][0] == predictor.labels[best]
        assert result["scores"][0] == pytest.approx(float(probabilities[best]))


def test_predictor_takes_paths_bytes_and_arrays_alike(predictor, files):
    by_path = predictor.predict(files[:2])
    by_bytes = predictor.predict([f.read_bytes() for f in files[:2]])
    assert by_bytes == by_path
    assert_same(predictor.predict(str(files[0])), by_path[:1])  # one image, not in a list
    decoded = np.stack([np.asarray(Image.open(f).convert("RGB").resize((40, 40))) for f in files])
    by_array = predictor.predict(decoded)  # a [n, h, w, 3] batch, sent as PNG
    as_floats = predictor.predict(list(decoded.astype(np.float32) / 255.0))
    assert_same(by_array, as_floats)
    with pytest.raises(DataError, match="not found"):
        predictor.predict([files[0], files[0].with_name("missing.jpg")])
    with pytest.raises(DataError, match="not an image"):
        predictor.predict([np.zeros((4, 4, 7), np.uint8)])


def test_predictor_bad_images_named_or_marked(predictor, files, tmp_path):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(bad_inputs(files[0].read_bytes())["truncated"])
    with pytest.raises(DataError, match=r"truncated\.jpg.*image #2 \(bytes\).*per_image_errors"):
        predictor.predict([files[0], truncated, b""])
    results = predictor.predict([files[0], truncated, b"", files[1]], per_image_errors=True)
    assert [("error" in r) for r in results] == [False, True, True, False]
    assert results[1] == {"labels": [], "scores": [], "error": serving.INVALID_IMAGE}
    assert_same([results[0], results[3]], predictor.predict([files[0], files[1]]))


def test_embed(predictor, files):
    assert predictor.embed(files[:3]).shape == (3, 16)


# --- REST ---------------------------------------------------------------------------------------

def test_rest_body_as_tf_serving_decodes_it_gives_the_local_answer(predictor, files):
    """base64 → bytes → signature → TF Serving's JSON answer → the client's parser."""
    encoded, _ = serving.encode_images(files)
    body = json.loads(json.dumps(Client.rest_body(encoded)))  # over the wire
    assert body["signature_name"] == "serving_default"
    assert body["instances"][0] == {"b64": base64.b64encode(files[0].read_bytes()).decode()}
    inputs = decode_rest_instances(body, input_names(predictor.model, "serving_default"))
    assert inputs == {"image_bytes": [f.read_bytes() for f in files]}
    answer = encode_rest_predictions(run_signature(predictor.model, "serving_default", inputs))
    parsed = Client.parse_rest_response(200, answer)
    assert predictor.task.decode(parsed, serving.INVALID_IMAGE) == predictor.predict(files)
    np.testing.assert_allclose(parsed["probabilities"],
                               predictor.outputs(files)["probabilities"], atol=1e-6)


def test_client_parses_recorded_answers_and_errors():
    decode = Client("localhost", "looks").task.decode  # the default: single-label answers
    parsed = Client.parse_rest_response(200, (DATA / "predict_response.json").read_text())
    assert decode(parsed, serving.INVALID_IMAGE) == [
        {"labels": ["checks", "circles", "hstripes"],
         "scores": [0.843120813, 0.0628561527, 0.0517493673]},
        {"labels": ["vstripes", "hstripes", "checks"],
         "scores": [0.879117131, 0.0536171943, 0.0391725451]}]
    assert parsed["probabilities"].shape == (2, 4)
    per_image = decode(Client.parse_rest_response(
        200, (DATA / "per_image_response.json").read_text()), serving.INVALID_IMAGE)
    assert per_image[0]["labels"][0] == "circles"
    assert per_image[1] == {"labels": [], "scores": [], "error": serving.INVALID_IMAGE}
    with pytest.raises(ServingRequestError, match=r"HTTP 400: .*Unknown image file format") as e:
        Client.parse_rest_response(400, (DATA / "error_invalid_argument.json").read_text())
    assert e.value.status == 400 and "\n" not in str(e.value).split("\t")[0][:60]
    with pytest.raises(ServingRequestError, match=r"HTTP 404: Servable not found.*Latest\(looks"):
        Client.parse_rest_response(404, (DATA / "error_not_found.json").read_text())
    with pytest.raises(ServingTimeout, match="HTTP 504"):
        Client.parse_rest_response(504, '{"error": "Deadline Exceeded"}')
    with pytest.raises(ServingRequestError, match="HTTP 502: <html>"):
        Client.parse_rest_response(502, "<html>bad gateway</html>")
    with pytest.raises(ServingRequestError, match="not a TF Serving predict answer"):
        Client.parse_rest_response(200, '{"outputs": []}')


def test_rest_client_against_a_stand_in_server(predictor, files, rest_server):
    address, seen = rest_server
    truncated = bad_inputs(files[0].read_bytes())["truncated"]
    with Client(address, "looks", timeout=20) as client:
        assert client.predict(files) == predictor.predict(files)
        mixed = client.predict([files[0], b"not an image", truncated], per_image_errors=True)
        assert_same(mixed, predictor.predict([files[0], b"not an image", truncated],
                                             per_image_errors=True))
        np.testing.assert_allclose(client.embed(files[:2]), predictor.embed(files[:2]), atol=1e-6)
        with pytest.raises(ServingRequestError, match="HTTP 400: .*Invalid JPEG data") as error:
            client.predict([files[0], truncated])
        assert error.value.status == 400
    assert seen[0][0] == "/v1/models/looks:predict"
    assert seen[1][1]["signature_name"] == "serving_per_image"
    Client(address, "looks", version=3, timeout=20).predict(files[:1])
    assert seen[-1][0] == "/v1/models/looks/versions/3:predict"
    with pytest.raises(ServingRequestError, match=r"HTTP 404: Servable not found.*Latest\(nope"):
        Client(f"http://{address}", "nope", timeout=20).predict(files[:1])
    with pytest.raises(ServingRequestError, match="HTTP 502: <html>"):
        Client(address, "proxy", timeout=20).predict(files[:1])


def test_rest_timeouts_and_unreachable_servers(files, rest_server):
    address, _ = rest_server
    start = time.perf_counter()
    with pytest.raises(ServingTimeout, match=f"no answer within {TIMEOUT:g} s"):
        Client(address, "slow", timeout=TIMEOUT).predict(files[:1])
    assert time.perf_counter() - start < SLOW
    with pytest.raises(ServingUnavailable, match="cannot connect"):
        Client(f"127.0.0.1:{free_ports(1)[0]}", "looks", timeout=5).predict(files[:1])


# --- gRPC ---------------------------------------------------------------------------------------

def test_grpc_requests_are_well_formed_predict_requests(predictor, files):
    from tensorflow_serving.apis import predict_pb2

    encoded, _ = serving.encode_images(files)
    client = Client("localhost", "looks", protocol="grpc", version=7)
    assert (client.hostname, client.port) == ("localhost", 8500)
    request = client.grpc_request(encoded, "serving_per_image")
    again = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert again == request and isinstance(request, predict_pb2.PredictRequest)
    assert request.model_spec.name == "looks"
    assert request.model_spec.signature_name == "serving_per_image"
    assert request.model_spec.version.value == 7
    assert list(request.inputs) == ["image_bytes"]
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [len(files)]
    assert list(tensor.string_val) == [f.read_bytes() for f in files]
    outputs = run_signature(predictor.model, "serving_per_image",
                            {"image_bytes": tf.make_ndarray(tensor).tolist()})
    assert_same(predictor.task.decode(outputs, serving.INVALID_IMAGE), predictor.predict(files))


def test_grpc_client_against_a_stand_in_server(predictor, files, grpc_server):
    address, seen = grpc_server
    truncated = bad_inputs(files[0].read_bytes())["truncated"]
    with Client(address, "looks", protocol="grpc", timeout=20) as client:
        assert client.predict(files) == predictor.predict(files)
        assert_same(client.predict([truncated, files[1]], per_image_errors=True),
                    predictor.predict([truncated, files[1]], per_image_errors=True))
        with pytest.raises(ServingRequestError, match="INVALID_ARGUMENT: .*Input is empty") as e:
            client.predict([files[0], b""])
        assert e.value.status == "INVALID_ARGUMENT"
    assert seen[0].model_spec.signature_name == "serving_default"
    with pytest.raises(ServingRequestError, match="NOT_FOUND: Servable not found"):
        Client(address, "nope", protocol="grpc", timeout=20).predict(files[:1])
    start = time.perf_counter()
    with pytest.raises(ServingTimeout, match="DEADLINE_EXCEEDED"):
        Client(address, "slow", protocol="grpc", timeout=TIMEOUT).predict(files[:1])
    assert time.perf_counter() - start < SLOW
    with pytest.raises(ServingUnavailable, match="UNAVAILABLE"):
        Client(f"127.0.0.1:{free_ports(1)[0]}", "looks", protocol="grpc", timeout=5).predict(
            files[:1])


def test_client_hosts_and_protocols():
    assert Client("tfs.internal", "m").url == "http://tfs.internal:8501/v1/models/m:predict"
    assert Client("https://tfs:443/", "m", version=2).url == \
        "https://tfs:443/v1/models/m/versions/2:predict"
    assert (Client("[::1]:9000", "m", protocol="grpc").hostname,
            Client("[::1]:9000", "m", protocol="grpc").port) == ("[::1]", 9000)
    with pytest.raises(RunwayError, match="protocol 'http'"):
        Client("localhost", "m", protocol="http")


# --- models.config and CLI ----------------------------------------------------------------------

def test_models_config_serves_every_model_under_the_export_dir(run, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = run.export_path.parent.parent
    second = tmp_path / "exports"
    (second / "brands" / "4").mkdir(parents=True)
    (second / "brands" / "4" / "saved_model.pb").write_bytes(b"stand-in")
    (second / "notes").mkdir()  # no versions: not a model
    for export_dir, names in ((base, ["looks"]), (second, ["brands"])):
        path = serving_config.write_models_config(export_dir)
        assert path == export_dir / "models.config"
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
        models = config.model_config_list.config
        assert [m.name for m in models] == names
        assert [m.base_path for m in models] == [str((export_dir / n).resolve()) for n in names]
        assert {m.model_platform for m in models} == {"tensorflow"}
    docker = text_format.Parse(serving_config.models_config(second, base_path="/models/"),
                               model_server_config_pb2.ModelServerConfig())
    assert docker.model_config_list.config[0].base_path == "/models/brands"
    with pytest.raises(RunwayError, match="holds no exported model"):
        serving_config.models_config(tmp_path / "exports" / "notes")


def test_cli_config_and_predict(run, files, rest_server, tmp_path, capsys):
    out = io.StringIO()
    serving_cli.main(["config", "--export_dir", str(run.export_path.parent.parent), "--output",
                  str(tmp_path / "models.config")], out=out)
    assert "looks" in out.getvalue() and (tmp_path / "models.config").exists()
    address, _ = rest_server
    out = io.StringIO()
    serving_cli.main(["predict", "--host", address, "--model", "looks", "--per_image_errors",
                  str(files[0]), str(files[1]), str(tmp_path / "models.config")], out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(rf"{re.escape(str(files[0]))}: (\w+ \d\.\d{{3}}, ){{2}}\w+ \d\.\d{{3}}",
                        lines[0])
    assert lines[2] == f"{tmp_path / 'models.config'}: error: {serving.INVALID_IMAGE}"
    with pytest.raises(SystemExit) as exit_:  # a user error: one line, status 2
        cli.run(lambda: serving_cli.main(["predict", "--host", f"127.0.0.1:{free_ports(1)[0]}",
                                      "--model", "looks", str(files[0])]))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "cannot connect" in err and "\n" not in err
