"""Similar-image retrieval (``python -m runway_cnn.index``): indexes of test-made photos built
with a fine-tuned export and with a backbone registry name, neighbours by class, recall@k and
mAP@10 against hand counts, ``--append`` against a full rebuild, FAISS against exact search, and
damaged or mismatched indexes as one-line errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import make_image_folder
from helpers import assert_one_line_error, run_cli
from tiny_models import make_tiny_hub_module

from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.backbones.factory import BACKBONES, BackboneEntry
from runway_cnn.backbones.hub import HubModule
from runway_cnn import index as index_cli
from runway_cnn.inference.retrieval import (
    EMBEDDINGS,
    FORMAT,
    INDEX_JSON,
    ImageIndex,
    build_image_index,
    evaluate_image_index,
    faiss_available,
    query_image_index,
    search,
)

CLASSES = ("checks", "disc", "hstripes", "vstripes")
TINY = "tiny_retrieval_test"


@pytest.fixture(scope="module")
def retrieval_data(tmp_path_factory):
    """A gallery and a query folder of 4 classes (different photos), a fine-tuned export, and
    the tiny backbone registered under a name."""
    root = tmp_path_factory.mktemp("retrieval")
    gallery = make_image_folder(root / "gallery", CLASSES, per_class=10, size=(40, 64), seed=1)
    queries = make_image_folder(root / "queries", CLASSES, per_class=4, size=(40, 64), seed=2)
    hub = make_tiny_hub_module(root / "hub")
    if TINY not in BACKBONES:
        BACKBONES.register(TINY, BackboneEntry(
            lambda weights, size: HubModule(str(hub), name="hub_module"), 32,
            default_weights=None))
    result = fine_tune(FinetuneConfig(dataset_dir=str(gallery), train_dir=str(root / "run"),
                                      model_name=f"hub:{hub}", image_size=32, batch_size=8,
                                      stage2_epochs=0, verbose=0))
    return root, gallery, queries, result


def test_neighbours_of_a_class_are_mostly_that_class(retrieval_data, tmp_path):
    root, gallery, queries, result = retrieval_data
    for model in (result.export_path, TINY):
        summary = build_image_index(model, gallery, tmp_path / str(hash(str(model))),
                                    progress=False)
        assert summary["count"] == 40 and summary["skipped"] == []
        index = ImageIndex(tmp_path / str(hash(str(model))))
        np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
        assert {item["label"] for item in index.items} == set(CLASSES)
        answers = query_image_index(index, [queries], k=5)
        same = [n["label"] == a["image"].split("/")[-2] for a in answers
                for n in a["neighbours"]]
        assert np.mean(same) > 0.6, model  # chance 0.25
        figures = evaluate_image_index(index, queries)
        assert figures["num_queries"] == 16 and figures["recall@1"] > 0.6


def _write_index(path, vectors, items):
    path.mkdir(parents=True)
    np.save(path / EMBEDDINGS, np.asarray(vectors, np.float32))
    (path / INDEX_JSON).write_text(json.dumps({
        "format": FORMAT, "model": "hand-made", "width": len(vectors[0]), "count": len(items),
        "items": items, "skipped": [], "image_size": 32}))


def test_recall_and_map_equal_a_hand_count(tmp_path):
    angle = np.radians([0, 10, 20, 90, 100, 180, 185])  # unit vectors on a circle
    gallery = np.stack([np.cos(angle), np.sin(angle)], 1)
    labels = ["a", "a", "b", "b", "a", "c", "c"]
    _write_index(tmp_path / "gallery", gallery, [{"path": f"g{i}", "label": t}
                                                 for i, t in enumerate(labels)])
    angle = np.radians([5, 93, 182, 50])
    queries = np.stack([np.cos(angle), np.sin(angle)], 1)
    _write_index(tmp_path / "queries", queries,
                 [{"path": "q0", "label": "a"}, {"path": "q1", "label": "b"},
                  {"path": "q2", "label": "c"}, {"path": "q3"}])
    figures = evaluate_image_index(tmp_path / "gallery", tmp_path / "queries", backend="exact")
    # q0 (a) at 5°: g0 a, g1 a, g2 b, g3 b, g4 a, ... → hits at 1, 2, 5
    # q1 (b) at 93°: by angle g3 b (3°), g4 a (7°), g2 b (73°), g1, g5, g6, g0 → hits at 1, 3
    # q2 (c) at 182°: g5 c, g6 c → hits at 1, 2;  q3 has no label: left out
    assert figures["num_queries"] == 3 and figures["left_out"] == 1
    assert figures["recall@1"] == 1.0 and figures["recall@5"] == 1.0
    ap = [(1 + 1 + 3 / 5) / 3, (1 + 2 / 3) / 2, (1 + 1) / 2]
    assert figures["map@10"] == pytest.approx(np.mean(ap))
    code, out, stderr = run_cli(index_cli.main, ["evaluate", "--index", str(tmp_path / "gallery"),
                                                 "--queries", str(tmp_path / "queries")])
    assert code == 0, stderr
    assert json.loads(out)["map@10"] == pytest.approx(np.mean(ap))


def test_append_equals_a_full_rebuild_and_lists_unreadable_files(retrieval_data, tmp_path):
    _, gallery, _, result = retrieval_data
    part = tmp_path / "photos"
    shutil.copytree(gallery, part)
    later = sorted((part / "disc").glob("*.jpg"))[5:]
    moved = tmp_path / "later"
    moved.mkdir()
    for f in later:
        f.rename(moved / f.name)
    (part / "checks" / "broken.jpg").write_bytes(b"not a photo")
    first = build_image_index(result.export_path, part, tmp_path / "appended", progress=False)
    assert first["count"] == 35 and [s["path"] for s in first["skipped"]] == \
        [str(part / "checks" / "broken.jpg")]
    for f in later:
        (moved / f.name).rename(part / "disc" / f.name)
    code, _, stderr = run_cli(index_cli.main, ["build", "--model", str(result.export_path),
                                               "--images", str(part), "--output",
                                               str(tmp_path / "appended"), "--append"])
    assert code == 0, stderr
    assert "5 images embedded" in stderr and "broken.jpg" in stderr
    build_image_index(result.export_path, part, tmp_path / "full", progress=False)
    appended, full = ImageIndex(tmp_path / "appended"), ImageIndex(tmp_path / "full")
    assert sorted(i["path"] for i in appended.items) == sorted(i["path"] for i in full.items)
    by_path = {i["path"]: v for i, v in zip(full.items, full.embeddings)}
    for item, vector in zip(appended.items, appended.embeddings):
        np.testing.assert_allclose(vector, by_path[item["path"]], atol=1e-6)
        assert item == next(i for i in full.items if i["path"] == item["path"])


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed "
                                                  "(pip install 'runway_cnn[faiss]')")
def test_faiss_and_exact_search_agree_on_a_small_index():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(500, 24)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[:20] + 0.05 * rng.normal(size=(20, 24)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = search(gallery, queries, 5, "exact")
    for backend in ("faiss-flat", "faiss-hnsw", "faiss-ivf"):
        got_scores, got = search(gallery, queries, 5, backend)
        assert (got[:, 0] == found[:, 0]).all(), backend
        np.testing.assert_allclose(got_scores[:, 0], scores[:, 0], atol=1e-5)
        if backend == "faiss-flat":
            assert (got == found).all()


def test_damaged_and_mismatched_indexes_are_one_line_errors(retrieval_data, tmp_path):
    _, gallery, queries, result = retrieval_data
    photo = str(next((queries / "disc").glob("*.jpg")))
    build_image_index(result.export_path, gallery, tmp_path / "good", progress=False)
    truncated = tmp_path / "truncated"
    shutil.copytree(tmp_path / "good", truncated)
    data = (truncated / EMBEDDINGS).read_bytes()
    (truncated / EMBEDDINGS).write_bytes(data[:len(data) // 2])
    code, _, stderr = run_cli(index_cli.main, ["query", "--index", str(truncated), photo])
    assert_one_line_error(code, stderr, EMBEDDINGS)
    wider = tmp_path / "wider"
    _write_index(wider, np.eye(3, 7), [{"path": f"x{i}"} for i in range(3)])
    meta = json.loads((wider / INDEX_JSON).read_text())
    meta["model"] = str(result.export_path)
    (wider / INDEX_JSON).write_text(json.dumps(meta))
    code, _, stderr = run_cli(index_cli.main, ["query", "--index", str(wider), photo])
    assert_one_line_error(code, stderr, "width")
    code, _, stderr = run_cli(index_cli.main, ["query", "--index", str(tmp_path), photo])
    assert_one_line_error(code, stderr, "not an image index")
    code, out, stderr = run_cli(index_cli.main, ["query", "--index", str(tmp_path / "good"),
                                                 photo, "--k", "3",
                                                 "--grid", str(tmp_path / "grid.png")])
    assert code == 0, stderr
    lines = out.splitlines()
    assert lines[0] == photo and len(lines) == 4 and all(
        line.split()[2] in CLASSES for line in lines[1:])
    assert (tmp_path / "grid.png").stat().st_size > 5000
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    answers = query_image_index(tmp_path / "good", [tmp_path / "broken.jpg", photo], k=2)
    assert answers[0] == {"image": str(tmp_path / "broken.jpg"), "error": "not an image"}
    assert answers[1]["image"] == photo and len(answers[1]["neighbours"]) == 2


def test_photos_tensorflow_would_misread_are_embedded_as_predict_reads_them(retrieval_data,
                                                                          tmp_path):
    """An EXIF-rotated JPEG and a CMYK JPEG take the one-by-one path (read_image), the others
    the parallel tf.data path; every embedding equals that of the photo read as predict reads
    it."""
    from PIL import Image

    from runway_cnn.inference.batch import read_image
    from runway_cnn.inference.retrieval import embed_files, load_embedder

    _, gallery, _, _ = retrieval_data
    folder = tmp_path / "odd"
    folder.mkdir()
    source = Image.open(next((gallery / "disc").glob("*.jpg"))).convert("RGB")
    source.save(folder / "plain.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    source.save(folder / "rotated.jpg", quality=95, exif=exif)
    source.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    files = sorted(folder.iterdir())
    embedder = load_embedder(TINY)
    vectors, kept, skipped = embed_files(embedder, files)
    assert kept == [0, 1, 2] and skipped == []
    for i, path in enumerate(files):
        expected = embedder.features(embedder.crop(read_image(path))[None])[0]
        np.testing.assert_allclose(vectors[i], expected / np.linalg.norm(expected), atol=1e-5)
    rotated = files.index(folder / "rotated.jpg")
    assert not np.allclose(vectors[rotated], vectors[files.index(folder / "plain.jpg")],
                           atol=1e-3)  # the rotation was applied, not ignored
