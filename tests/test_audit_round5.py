"""Reliability round 5 of the audit and the web page: the perceptual hash's distance is the same
both ways, the caches are keyed on the files' content and the feature settings, a regression's
copies conflict only beyond a tolerance, a confused pair's share is a share, ``--fix`` keeps the
given splits, and the web page shows every model given."""
from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from runway_cnn.data.leaks import hash_distance


def _fake_audit(tmp_path: Path, labels: dict[str, object], task, split_of=None,
                origin: str = "the given split folders") -> SimpleNamespace:
    """What write_fix and near_duplicates read of an audit, without images or a backbone."""
    sources = sorted(labels)
    return SimpleNamespace(
        sources=sources, out=tmp_path, task=task, split_origin=origin,
        split_of=split_of or [s.split("/")[0] for s in sources],
        config=SimpleNamespace(task=task.name, group_by=None, near_duplicate_cosine=0.85),
        pool=SimpleNamespace(raw_labels=[labels[s] for s in sources], groups=None))


def test_the_hash_distance_is_the_same_whichever_photo_comes_first():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (tuple(int(v) for v in rng.integers(0, 2 ** 62, 2)) for _ in range(2))
        assert hash_distance(a, b) == hash_distance(b, a)


def test_fix_keeps_the_training_copy_of_a_byte_identical_train_test_pair(tmp_path):
    """train/coat/b.jpg and test/coat/b.jpg are one file; train/coat/a.jpg is a near copy whose
    hash agrees with the mirrored hash of b (0 bits) but not with b's plain hash (8 bits). Both
    copies of b are near copies of a, whichever is listed first: the test copy goes with the
    training one (README: the training copy is kept)."""
    from runway_cnn.audit.run import near_duplicates, write_fix
    from runway_cnn.tasks import SingleLabelTask

    labels = {"test/coat/b.jpg": "coat", "train/coat/a.jpg": "coat", "train/coat/b.jpg": "coat",
              "train/dress/d.jpg": "dress", "train/dress/e.jpg": "dress"}
    audit = _fake_audit(tmp_path, labels, SingleLabelTask(["coat", "dress"]))
    plain_a, mirror_a = 0x0F0F_0F0F_0F0F_0F0F, 0x00FF_00FF_00FF_00FF
    plain_b = mirror_a ^ 0xFF  # 8 bits from a's mirrored hash, far from a's plain one
    hashes = {"train/coat/a.jpg": (plain_a, mirror_a), "test/coat/b.jpg": (plain_b, plain_a),
              "train/coat/b.jpg": (plain_b, plain_a), "train/dress/d.jpg": (1, 2),
              "train/dress/e.jpg": (2 ** 40, 2 ** 50)}
    rows = {"train/coat/a.jpg": [1.0, 0.3, 0.0], "test/coat/b.jpg": [1.0, 0.0, 0.0],
            "train/coat/b.jpg": [1.0, 0.0, 0.0], "train/dress/d.jpg": [0.0, 0.0, 1.0],
            "train/dress/e.jpg": [0.0, 1.0, -1.0]}
    features = np.array([rows[s] for s in audit.sources], np.float32)
    digests = ["same" if s.endswith("coat/b.jpg") else s for s in audit.sources]
    near = near_duplicates(audit, features, digests, [hashes[s] for s in audit.sources])
    assert [p["hash_bits"] for p in near["pairs"]] == [0, 0]
    exact = {"sha1": "same", "files": ["test/coat/b.jpg", "train/coat/b.jpg"]}
    fix = write_fix(audit, {"exact_duplicates": [exact], "near_duplicates": near, "notes": [],
                            "label_errors": []})
    removed = {r["file"] for r in fix["removed"]}
    assert removed == {"test/coat/b.jpg", "train/coat/b.jpg"}


def test_the_web_page_names_every_export_given_even_when_they_share_a_serving_name():
    """Three exports all served as ``images`` (and one folder named ``images#2``): every model
    is loaded under its own name, none replaces another."""
    from runway_cnn.app.server import _names

    exports = [SimpleNamespace(version_dir=Path(f"/exports/{run}/{name}/1")) for run, name in
               (("a", "images"), ("b", "images"), ("c", "images"), ("d", "images#2"))]
    names = _names(exports)
    assert len(set(names)) == len(exports)
    assert names[:3] == ["images", "images#2", "images#3"] and names[3].startswith("images#2")


def test_a_confused_pairs_share_is_a_share_of_the_pairs_photos():
    """An attribute's two values mostly taken for each other (3 of 4 ``red`` as ``blue``, 1 of
    2 ``blue`` as ``red``): 4 of the pair's 6 photos, not 3/4 + 1/2 = 1.25; the summary says
    what the figure is."""
    from runway_cnn.audit.findings import confused_pairs
    from runway_cnn.audit.report import summary_text

    given = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([1, 1, 1, 0, 0, 1, 2])
    _, pairs = confused_pairs(given, predicted, ["red", "blue", "green"])
    assert [(p["labels"], p["images"]) for p in pairs] == [(["red", "blue"], 4)]
    assert pairs[0]["share"] == pytest.approx(4 / 6, abs=1e-4)
    result = {"dataset": "d", "images": 7, "labels": ["colour"], "task": "attributes",
              "backbone": "b", "features_cached": False, "splits": "none (one pool)",
              "split_counts": {}, "exact_duplicates": [], "outliers": [], "not_done": [],
              "notes": [], "seconds": {}, "near_duplicates": {
                  "threshold": 0.85, "count": 0, "across_splits": 0, "hash_agrees": 0,
                  "pairs": []},
              "confused_pairs": [{"attribute": "colour", **pairs[0]}]}
    line = [x for x in summary_text(result).splitlines() if x.startswith("most confused")]
    assert line == ["most confused (share of a pair's photos predicted as the other): "
                    "colour: red <-> blue 0.67"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny test backbone and ``audit(folder, out, **settings)`` through it at 32 px."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import make_tiny_hub_module

    from runway_cnn.audit import audit_dataset

    hub = make_tiny_hub_module(tmp_path_factory.mktemp("tiny") / "hub")

    def audit(folder, out, **settings):
        return audit_dataset(**{"dataset_dir": str(folder), "output_dir": str(out),
                                "model_name": f"hub:{hub}", "image_size": 32,
                                "batch_size": 16, **settings})
    return audit


def _same_size_photos(root: Path, per_class: int = 4) -> Path:
    """4 classes of drawn 40 × 40 photos as uncompressed PNGs: every file has the same size."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import DEFAULT_CLASSES, make_image

    rng = np.random.default_rng(1)
    for index, name in enumerate(DEFAULT_CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            make_image(index, (40, 40), rng).save(root / name / f"{name}_{i}.png",
                                                  compress_level=0)
    return root


def test_a_photo_replaced_with_its_size_and_mtime_put_back_is_read_again(tiny, tmp_path):
    """``cp other.png photo.png; touch -r old photo.png``: same name, size and modification
    time, new bytes. The next audit into the same folder sees the exact copy it makes and
    computes the features again; another --image_size does too, the same settings reuse them."""
    import os

    photos = _same_size_photos(tmp_path / "photos")
    out = tmp_path / "out"
    first = tiny(photos, out)
    assert not first["exact_duplicates"] and not first["features_cached"]
    photo, other = photos / "circles/circles_1.png", photos / "circles/circles_2.png"
    before = photo.stat()
    assert other.stat().st_size == before.st_size and photo.read_bytes() != other.read_bytes()
    photo.write_bytes(other.read_bytes())
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (before.st_size,
                                                                before.st_mtime_ns)
    second = tiny(photos, out)
    assert [sorted(d["files"]) for d in second["exact_duplicates"]] == [
        ["circles/circles_1.png", "circles/circles_2.png"]]
    assert not second["features_cached"]
    assert not tiny(photos, out, image_size=48)["features_cached"]
    assert tiny(photos, out, image_size=48)["features_cached"]


def test_a_regressions_copies_conflict_only_when_their_values_differ_beyond_a_tolerance(
        tmp_path):
    """Prices of near copies: 100 and 100.5 are one value (the training copy is kept, the test
    copy goes), 300 and 500 are a label conflict (kept and listed): one conflict, not two, said
    in the summary in the values' terms; no value is said to be emptied."""
    from runway_cnn.audit.report import summary_text
    from runway_cnn.audit.run import near_duplicates, write_fix
    from runway_cnn.tasks import RegressionTask

    prices = {"test/a.jpg": 100.5, "train/a.jpg": 100.0, "train/c.jpg": 300.0,
              "train/d.jpg": 500.0, "train/e.jpg": 50.0, "train/f.jpg": 800.0}
    audit = _fake_audit(tmp_path, prices, RegressionTask(["price"], target_column="price"))
    rows = {"test/a.jpg": [1.0, 0.01, 0.0], "train/a.jpg": [1.0, 0.0, 0.0],
            "train/c.jpg": [0.0, 1.0, 0.0], "train/d.jpg": [0.0, 1.0, 0.01],
            "train/e.jpg": [0.0, 0.0, 1.0], "train/f.jpg": [-1.0, 0.0, -1.0]}
    features = np.array([rows[s] for s in audit.sources], np.float32)
    near = near_duplicates(audit, features, list(audit.sources), [(7, 7)] * len(prices))
    assert {tuple(p["files"]): p["same_label"] for p in near["pairs"]} == {
        ("test/a.jpg", "train/a.jpg"): True, ("train/c.jpg", "train/d.jpg"): False}
    result = {"exact_duplicates": [], "near_duplicates": near, "notes": [], "label_errors": []}
    fix = write_fix(audit, result)
    assert [r["file"] for r in fix["removed"]] == ["test/a.jpg"]
    assert [c["files"] for c in fix["label_conflicts"]] == [["train/c.jpg", "train/d.jpg"]]
    assert result["notes"] == [] and fix["classes_kept_whole"] == []
    with (tmp_path / "cleaned_labels.csv").open(newline="") as f:
        assert {row["filename"]: float(row["price"]) for row in csv.DictReader(f)} == {
            s: v for s, v in prices.items() if s != "test/a.jpg"}
    tolerance = 0.1 * np.std(list(prices.values()))
    assert 0.5 < tolerance < 200
    _, conflict = audit.task.copies_agree(list(prices.values()))
    assert conflict.startswith(f"values more than {tolerance:.4g} apart")
    summary = {"dataset": "d", "images": 6, "labels": ["price"], "task": "regression",
               "backbone": "b", "features_cached": False, "splits": "the given split folders",
               "split_counts": {}, "exact_duplicates": [], "outliers": [], "not_done": [],
               "notes": [], "seconds": {}, "near_duplicates": near,
               "label_conflicts_carry": conflict}
    assert f"; 1 copies carry {conflict}" in summary_text(summary)


def test_fix_on_given_split_folders_says_a_run_on_the_manifest_splits_again(tiny, tmp_path):
    """``train/`` and ``test/`` folders: the cleaned manifest names each photo with its split
    folder, and one note says a --labels_csv run would split its rows again (the test photos
    into training) and what to do; an audit without --fix does not say it."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_image_folder

    from runway_cnn.audit.report import summary_text

    photos = make_image_folder(tmp_path / "photos", per_class=3, size=(40, 56),
                               splits=("train", "test"))
    result = tiny(photos, tmp_path / "out", fix=True)
    assert result["splits"] == "the given split folders"
    said = [n for n in result["notes"] if "split" in n]
    assert len(said) == 1 and "test/ photos would be trained on" in said[0]
    assert "--refit auto" in said[0] and "\n" not in said[0]
    assert f"note: {said[0]}" in summary_text(result)
    with (tmp_path / "out" / "cleaned_labels.csv").open(newline="") as f:
        names = [row["filename"] for row in csv.DictReader(f)]
    assert any(n.startswith("test/") for n in names)
    plain = tiny(photos, tmp_path / "plain")
    assert not [n for n in plain["notes"] if "split" in n]
