"""The web app (``python -m runway_cnn.app``): over tiny single-label, multi-label and attribute
exports with a retrieval index and an attribute index, every model's answer equals
``Predictor``'s, the similar items and map equal the index queries', every bad upload is a 400
``{"error"}``, the size cap stops reading, thumbnails come only from indexed items; a real
uvicorn server answers 200 requests 8 at a time correctly, and headless Chromium uploads a photo
and finds the labels and thumbnails in the page (skipped without Chromium)."""
from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image
from helpers import (assert_one_line_error, headless_browser, make_multilabel_folder, run_cli,
                     serving, write_attribute_photos)
from tiny_models import make_tiny_hub_module

fastapi = pytest.importorskip("fastapi", reason="the [app] extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from runway_cnn import FinetuneConfig, fine_tune  # noqa: E402
from runway_cnn.app.server import PAGE, create_app, load_models  # noqa: E402
from runway_cnn.app.uploads import read_upload  # noqa: E402
from runway_cnn.app import __main__ as app_cli  # noqa: E402
from runway_cnn.inference.batch import read_image  # noqa: E402
from runway_cnn.inference.predictor import Predictor  # noqa: E402
from runway_cnn.inference.attribute_index import build_attribute_index, query_attribute_index  # noqa
from runway_cnn.inference.retrieval import build_image_index, query_image_index  # noqa: E402
from runway_cnn.tasks.base import Task  # noqa: E402

CLASSES = ("checks", "disc", "hstripes", "vstripes")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Three tiny exports (single-label, multi-label, attributes) on one tiny backbone, a
    retrieval index of the single-label gallery, an attribute index, loaded once; test photos
    (a JPEG, a half-transparent PNG that must be converted as training converts it, JPEGs)."""
    root = tmp_path_factory.mktemp("app")
    hub = str(make_tiny_hub_module(root / "hub"))
    common = dict(model_name=f"hub:{hub}", image_size=32, batch_size=8, stage2_epochs=0, verbose=0)
    gallery = make_image_folder(root / "gallery", CLASSES, per_class=8, size=(40, 64), seed=1)
    single = fine_tune(FinetuneConfig(dataset_dir=str(gallery), train_dir=str(root / "single"),
                                      **common))
    photos, labels_csv = make_multilabel_folder(root / "multi", per_kind=6)
    multi = fine_tune(FinetuneConfig(dataset_dir=str(photos), labels_csv=str(labels_csv),
                                     task="multi_label", train_dir=str(root / "multi_run"),
                                     validation_fraction=0.25, test_fraction=0.25, **common))
    photos, labels_csv = write_attribute_photos(root / "attrs", per_kind=6)
    attrs = fine_tune(FinetuneConfig(dataset_dir=str(photos), labels_csv=str(labels_csv),
                                     task="attributes", train_dir=str(root / "attrs_run"),
                                     validation_fraction=0.25, test_fraction=0.25, **common))
    build_image_index(single.export_path, gallery, root / "index", progress=False)
    build_attribute_index(attrs.export_path, photos, root / "recommend", epochs=30,
                          progress=False)
    exports = [single.export_path, multi.export_path, attrs.export_path]
    models = load_models(exports, root / "index", root / "recommend", k=4)
    queries = make_image_folder(root / "queries", CLASSES, per_class=1, size=(40, 64), seed=5)
    jpeg = sorted(queries.rglob("*.jpg"))[0]
    png = root / "rgba.png"
    rgba = Image.open(sorted(queries.rglob("*.jpg"))[1]).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, rgba.width // 2, rgba.height))  # half transparent: put on white
    rgba.putalpha(alpha)
    rgba.save(png)
    return root, exports, models, [jpeg, png, *sorted(queries.rglob("*.jpg"))[2:]]


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served[2]))


def _post(client, path: Path, kind: str = "image/jpeg"):
    return client.post("/api/predict", files={"file": (path.name, path.read_bytes(), kind)})


def test_every_tasks_answer_is_the_predictors_and_the_indexes(served, client):
    root, exports, models, photos = served
    assert [m["task"] for m in client.get("/api/models").json()["models"]] == \
        ["single_label", "multi_label", "attributes"]
    for photo in photos[:2]:
        answer = _post(client, photo).json()
        expected = [Predictor(e).predict([str(photo)])[0] for e in exports]
        assert list(answer["predictions"].values()) == expected
        assert set(expected[0]) == {"labels", "scores"} and "attributes" in expected[2]
        raw = client.post("/api/predict", content=photo.read_bytes(),
                          headers={"content-type": "application/octet-stream"}).json()
        assert raw == answer
        [query] = query_image_index(root / "index", [photo], k=4)
        assert [n["name"] for n in answer["similar"]] == \
            [Path(n["path"]).name for n in query["neighbours"]]
        np.testing.assert_allclose([n["score"] for n in answer["similar"]],
                                   [n["score"] for n in query["neighbours"]], atol=1e-4)
        [near] = query_attribute_index(root / "recommend", [photo], k=4)
        assert [n["name"] for n in answer["recommend"]["neighbours"]] == \
            [Path(n["path"]).name for n in near["neighbours"]]
        np.testing.assert_allclose(answer["recommend"]["map"], near["map"], atol=1e-4)
    points = client.get("/api/map").json()["points"]
    assert len(points) == len(models.recommend.index.items)


def test_the_page_shows_each_tasks_display(served, client):
    """The answer carries each result's ``Task.display`` (its caption the task's describe), the
    page's script reads no result key a task defines, and a task defining only ``decode`` is
    displayed by the default."""
    models = served[2]
    answer = _post(client, served[3][0]).json()
    assert list(answer["display"]) == list(answer["predictions"])
    for name, result in answer["predictions"].items():
        task = models.predictors[name].task
        assert answer["display"][name] == task.display(result)
        assert answer["display"][name]["caption"] == task.describe(result) != ""
    single, multi, attrs = answer["predictions"].values()
    bars = [[(i["text"], i["score"]) for i in d["items"]] for d in answer["display"].values()]
    assert bars[0] == list(zip(single["labels"], single["scores"]))
    assert bars[1] == (list(zip(multi["labels"], multi["scores"])) or [("(no label)", None)])
    assert bars[2] == [(f"{a}: {v['value']}", v["score"]) for a, v in attrs["attributes"].items()]
    task = models.recommend.predictor.task
    for n in answer["recommend"]["neighbours"]:
        assert n["display"] == task.display(n["result"]) and n["display"]["caption"]
    script = PAGE.read_text(encoding="utf-8")
    assert set(re.findall(r"\bresult\.(\w+)", script)) == {"error", "explain_error",
                                                           "explanations"}
    assert not re.findall(r"\b(scores|attributes|value)\b|\w\.result\b", script)
    assert re.findall(r"\w+\.labels\b", script) == ["m.labels"]  # /api/models' label count

    class Minimal(Task):
        def decode(self, outputs, error):
            return [{"pattern": {"value": "checks", "score": 0.9}, "tone": {"value": "dark"},
                     "length": 1.23456, "seasons": ["spring", "fall"], "fit": None}]

    result = Minimal(["x"]).decode({}, "")[0]
    assert Minimal(["x"]).display(result) == {
        "caption": "pattern: checks, tone: dark, length: 1.235",
        "items": [{"text": "pattern: checks", "score": 0.9},
                  {"text": "tone: dark", "score": None}, {"text": "length: 1.235", "score": None},
                  {"text": "seasons: spring, fall", "score": None}]}


def test_thumbnails_are_served_for_indexed_items_only(served, client):
    answer = _post(client, served[3][0]).json()
    for item in answer["similar"] + answer["recommend"]["neighbours"]:
        response = client.get(item["thumb"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(response.content)).size) <= 160
    count = len(served[2].similar.index.items)
    for url in (f"/thumb/similar/{count}", "/thumb/similar/-1", "/thumb/other/0",
                "/thumb/similar/..%2F..%2Fetc%2Fpasswd", "/thumb/similar/x"):
        response = client.get(url)
        assert response.status_code in (400, 404) and set(response.json()) == {"error"}, url


def _assert_400(response, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], (word, body["error"])


def test_bad_uploads_are_400_with_a_clear_error(served, client):
    good = served[3][0].read_bytes()
    files = lambda data, kind="image/jpeg": {"file": ("x.jpg", data, kind)}  # noqa: E731
    _assert_400(client.post("/api/predict", files=files(b"this is not a photo")), "not an image")
    _assert_400(client.post("/api/predict", content=b"%PDF-1.4",
                            headers={"content-type": "image/jpeg"}), "not an image")
    _assert_400(client.post("/api/predict", files=files(b"")), "empty")
    _assert_400(client.post("/api/predict", content=b""), "empty")
    _assert_400(client.post("/api/predict", files=files(good[:len(good) // 2])), "truncated")
    _assert_400(client.post("/api/predict", files=files(good, "text/plain")), "content type")
    _assert_400(client.post("/api/predict", content=good,
                            headers={"content-type": "text/plain"}), "content type")
    _assert_400(client.post("/api/predict", files={"photo": ("x.jpg", good, "image/jpeg")}),
                "'file'")
    _assert_400(client.post("/api/predict", content=b"--x\r\nbroken",
                            headers={"content-type": "multipart/form-data"}), "boundary")
    small = TestClient(create_app(dataclasses.replace(served[2], max_bytes=len(good) - 1,
                                                      max_pixels=40 * 40 - 1)))
    _assert_400(small.post("/api/predict", files=files(good)), "--max_mb")
    _assert_400(small.post("/api/predict", content=iter([good[:500], good[500:]]),
                           headers={"content-type": "image/jpeg"}), "--max_mb")
    tiny = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(tiny, "PNG")
    _assert_400(small.post("/api/predict", files=files(tiny.getvalue(), "image/png")),
                "40×40", "--max_pixels")
    assert _post(client, served[3][0]).status_code == 200  # the app is fine after all of them


def test_the_size_cap_stops_reading_the_body():
    read = []

    async def chunks():
        for _ in range(100):
            read.append(1)
            yield b"x" * 1000

    with pytest.raises(Exception, match="--max_mb"):
        asyncio.run(read_upload({"content-type": "image/jpeg"}, chunks(), 5_000))
    assert len(read) == 6  # the chunk past the cap, not the 100 of them
    read.clear()
    with pytest.raises(Exception, match="--max_mb"):
        asyncio.run(read_upload({"content-type": "image/jpeg", "content-length": "100000"},
                                chunks(), 5_000))
    assert read == []  # a declared length over the cap is refused unread


def test_cli_errors_are_one_line(tmp_path):
    code, _, stderr = run_cli(app_cli.main, ["--model", str(tmp_path / "missing")])
    assert_one_line_error(code, stderr, str(tmp_path / "missing"))


# --- a real server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(served):
    """uvicorn serving the app on a free 127.0.0.1 port in a thread; its base URL."""
    with serving(create_app(served[2])) as url:
        yield url


def test_200_requests_8_at_a_time_are_all_answered_right(served, server):
    import httpx

    photos = served[3]
    with TestClient(create_app(served[2])) as reference_client:
        expected = [_post(reference_client, p).json() for p in photos]
    for photo, answer in zip(photos, expected):
        assert list(answer["predictions"].values()) == \
            [p.predict([str(photo)])[0] for p in served[2].predictors.values()]

    def ask(i: int) -> bool:
        photo = photos[i % len(photos)]
        with httpx.Client(base_url=server, timeout=60) as http:
            response = http.post("/api/predict", files={"file": (photo.name, photo.read_bytes(),
                                                                 "image/jpeg")})
        return response.status_code == 200 and response.json() == expected[i % len(photos)]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(200)))
    assert sum(answers) == 200


def test_a_browser_uploads_a_photo_and_sees_labels_and_similar_items(served, server,
                                                                      tmp_path):
    with headless_browser() as browser:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(server + "/")
        photo = served[3][0]
        browser.find_element(By.ID, "file").send_keys(str(photo))
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.ID, "status").text == photo.name)
        wait.until(lambda b: all(img.get_attribute("naturalWidth") not in (None, "0")
                                 for img in b.find_elements(By.CSS_SELECTOR, "img.thumb")))
        text = browser.find_element(By.ID, "answers").text
        expected = served[2].predictors
        single = next(iter(expected.values())).predict([str(photo)])[0]["labels"][0]
        assert single in text
        for name in expected:
            assert name in text
        for predictor in expected.values():  # every line of each task's display
            for item in predictor.task.display(predictor.predict([str(photo)])[0])["items"]:
                assert item["text"] in text
        near = served[2].recommend
        captions = [f.get_attribute("title") for f in browser.find_elements(
            By.XPATH, "//img[contains(@src, '/thumb/recommend/')]/following-sibling::figcaption")]
        assert captions == [f"{near.predictor.task.describe(n['result'])} ({n['distance']:.3f})"
                            for n in near.nearest(near.vector(read_image(str(photo))))[
                                "neighbours"]]
        thumbs = browser.find_elements(By.CSS_SELECTOR, "img.thumb")
        assert len(thumbs) == 2 * served[2].k  # similar items and attribute neighbours
        assert all(t.get_attribute("src").startswith(server + "/thumb/") for t in thumbs)
        assert browser.find_elements(By.CSS_SELECTOR, "#map circle.photo")
        assert browser.find_element(By.ID, "error").text == ""
        shot = tmp_path / "app_page.png"
        browser.save_screenshot(str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / shot.name)
        bad = tmp_path / "notes.jpg"
        bad.write_bytes(b"not a photo")
        browser.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert "not an image" in browser.find_element(By.ID, "error").text
