"""Helpers several test files share: test-made multi-label and attribute photo sets, running a CLI
the way ``python -m`` does, TF Serving's REST row format, and free loopback ports. Kept here so no
test file imports another."""
from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from conftest import make_image
from runway_cnn import FinetuneConfig, RunResult, cli, fine_tune
from runway_cnn import predict as predict_cli
from runway_cnn.inference.client import Client
from runway_cnn.inference.predictor import INVALID_IMAGE, Predictor, encode_images

PATTERNS = ("checks", "disc", "hstripes", "vstripes")


# --- test-made photo sets -----------------------------------------------------------------------
def tiny_csv_run(photos, labels_csv, task: str, train_dir, hub, **settings) -> RunResult:
    """A run of ``task`` on ``photos`` labelled by ``labels_csv``, on the tiny backbone ``hub`` at
    32 px, a quarter of the photos each for validation and test (stage 1 only unless
    ``settings`` say otherwise)."""
    return fine_tune(FinetuneConfig(**{
        "dataset_dir": str(photos), "labels_csv": str(labels_csv), "task": task,
        "train_dir": str(train_dir), "model_name": f"hub:{hub}", "image_size": 32, "batch_size": 8,
        "stage2_epochs": 0, "validation_fraction": 0.25, "test_fraction": 0.25, "verbose": 0,
        **settings}))



def assert_refit_on_every_split(result: RunResult) -> None:
    """``result``'s export learned from all three splits the run made (``--refit auto``), with
    the counts of its ``splits.json``, and differs from the training-split model whose figures
    the run reports; the export's metadata records it."""
    splits = json.loads((result.train_dir / "splits.json").read_text())
    refit = result.metrics["refit"]
    assert refit["refit"] and refit["splits"] == ["train", "validation", "test"]
    assert refit["images_by_split"] == {name: len(rows) for name, rows in splits.items()}
    assert refit["images"] == sum(len(rows) for rows in splits.values())
    stage = "stage2" if (result.train_dir / "stage2" / "final.weights.h5").exists() else "stage1"
    selected = result.model.get_weights()
    result.model.load_weights(str(result.train_dir / stage / "final.weights.h5"))
    try:
        assert any(not np.allclose(a, b) for a, b in zip(selected, result.model.get_weights()))
    finally:
        result.model.set_weights(selected)
    meta = json.loads((result.export_path / "assets" / "runway_cnn.json").read_text())
    assert meta["refit"]["images"] == refit["images"]


def tags_of(index: int) -> list[str]:
    """Image kind ``index`` (pattern ``index % 4``, colour ``index``): its pattern, ``striped``
    with both stripe patterns (co-occurrence by construction) and ``dark`` for kinds 4–7."""
    tags = [PATTERNS[index % 4]]
    if index % 4 in (2, 3):
        tags.append("striped")
    if index >= 4:
        tags.append("dark")
    return tags


def make_multilabel_folder(root, per_kind: int = 8, seed: int = 0):
    """``root/photos/*.jpg`` of 8 kinds and ``root/labels.csv`` (``filename,labels``)."""
    rng = np.random.default_rng(seed)
    photos = root / "photos"
    photos.mkdir(parents=True)
    rows = []
    for kind in range(8):
        for i in range(per_kind):
            name = f"kind{kind}_{i:02d}.jpg"
            size = tuple(int(v) for v in rng.integers(40, 73, 2))
            image = make_image(kind, size, rng)
            if kind >= 4:  # "dark": a darker version
                image = image.point(lambda v: v // 2)
            image.save(photos / name, quality=90)
            rows.append((name, ";".join(tags_of(kind))))
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "labels"])
        writer.writerows(rows)
    return photos, root / "labels.csv"


def write_attribute_photos(root, per_kind: int = 10, seed: int = 0):
    """``root/photos/*.jpg`` of 8 kinds (pattern = kind % 4; dark for kinds 4–7) and
    ``root/attributes.csv``: pattern, tone (unknown for every image numbered 0) and sleeve (a
    rare value 'cap' on 2 images, unknown for odd kinds)."""
    photos = root / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for kind in range(8):
        for i in range(per_kind):
            name = f"k{kind}_{i}.jpg"
            image = make_image(kind, tuple(int(v) for v in rng.integers(40, 73, 2)), rng)
            if kind >= 4:
                image = image.point(lambda v: v // 2)
            image.save(photos / name, quality=90)
            tone = "" if i == 0 else ("dark" if kind >= 4 else "light")
            sleeve = "cap" if (kind, i) in ((0, 1), (2, 1)) else (
                "" if kind % 2 else ("long" if kind < 4 else "short"))
            rows.append((name, PATTERNS[kind % 4], tone, sleeve))
    with (root / "attributes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "pattern", "tone", "sleeve"])
        writer.writerows(rows)
    return photos, root / "attributes.csv"


# --- the CLIs -----------------------------------------------------------------------------------

def run_cli(main, argv) -> tuple[int, str, str]:
    """A CLI's ``main`` under ``cli.run``, as ``python -m`` runs it: (exit code, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.run(lambda: main(argv))
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def predict_csv_rows(model, files, output) -> list[dict]:
    """``python -m runway_cnn.predict --model MODEL FILES --output OUTPUT`` (which must succeed)
    and the CSV rows it wrote."""
    code, _, stderr = run_cli(predict_cli.main, ["--model", str(model), *map(str, files),
                                                 "--output", str(output)])
    assert code == 0, stderr
    with open(output, newline="", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def assert_one_line_error(code: int, stderr: str, *named: str) -> None:
    """A user error as the CLIs report it: exit code 2 and one ``error:`` line naming ``named``."""
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for text in named:
        assert text in lines[0], (text, lines[0])


# --- what TF Serving does with a REST request ---------------------------------------------------

def decode_rest_instances(body: dict, input_names: list[str]) -> dict[str, list]:
    """TF Serving's row format: ``instances`` → one list per input; ``{"b64": s}`` → bytes."""
    def value(v):
        return base64.b64decode(v["b64"]) if isinstance(v, dict) and set(v) == {"b64"} else v
    rows = body["instances"]
    if rows and isinstance(rows[0], dict) and set(rows[0]) != {"b64"}:  # named inputs
        return {name: [value(row[name]) for row in rows] for name in rows[0]}
    (name,) = input_names  # bare values: the signature must have exactly one input
    return {name: [value(v) for v in rows]}


def encode_rest_predictions(outputs: dict[str, np.ndarray]) -> str:
    """TF Serving's row-format answer; DT_STRING outputs as text (they are not named *_bytes)."""
    def plain(v):
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v.decode() if isinstance(v, bytes) else v
    lists = {k: v.tolist() for k, v in outputs.items()}
    n = len(next(iter(lists.values())))
    rows = [{k: plain(v[i]) for k, v in lists.items()} for i in range(n)]
    return json.dumps({"predictions": rows})


def run_signature(loaded, signature: str, inputs: dict[str, list]) -> dict[str, np.ndarray]:
    """An exported signature run on plain lists, as TF Serving runs it on decoded instances."""
    fn = loaded.signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def tflite_and_client_answers(result, files, tmp_path, model_name: str) -> tuple[Predictor, list]:
    """Checks a run's float TFLite file gives its SavedModel's probabilities on ``files``' eval
    crops; returns the export's Predictor and what a :class:`Client` decodes from TF Serving's
    ``serving_per_image`` REST answer for ``files`` plus one non-image (last)."""
    from runway_cnn.export.tflite import export_tflite, tflite_probabilities

    predictor = Predictor(result.export_path)
    images = np.stack([predictor.crop(np.asarray(Image.open(f).convert("RGB"))) for f in files])
    paths = export_tflite(result.model, result.task, 32, tmp_path / "1", ["float"])
    np.testing.assert_allclose(tflite_probabilities(paths["float"], images),
                               predictor.probabilities(images), atol=1e-5)
    encoded, _ = encode_images(files + [b"not a photo"])
    body = json.loads(json.dumps(Client.rest_body(encoded, "serving_per_image")))
    answer = encode_rest_predictions(run_signature(
        predictor.model, "serving_per_image", decode_rest_instances(body, ["image_bytes"])))
    client = Client("localhost", model_name, task=predictor.task)
    return predictor, client.task.decode(Client.parse_rest_response(200, answer), INVALID_IMAGE)


# --- loopback ports -----------------------------------------------------------------------------

def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (all held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --- the web app in a real server and a real browser ---------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def serving(app):
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def headless_browser():
    """Headless Chromium through Selenium (the test is skipped without them)."""
    import pytest

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"no headless Chromium: {CHROMIUM} and {CHROMEDRIVER} are needed "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1100,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.set_page_load_timeout(30)
        yield browser
    finally:
        browser.quit()
