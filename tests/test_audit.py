"""The data audit (``python -m runway_cnn.audit``) on a dataset with planted problems: exact copies,
re-encoded / resized / mirrored copies (within a split and across the given train/test folders)
and images put in another class's folder. Precision and recall of each finding are measured.

The photos are crops of real photos that ship with scikit-image and scikit-learn (a class is the
photo a crop comes from), through the real ImageNet EfficientNet-Lite0. Measured before choosing
them: the tiny test backbone gives distinct drawn photos (``conftest.make_image``) cosines up to
0.998, above their planted copies' lowest (0.995), and Lite0 on drawn photos 0.988 against 0.70;
small crops (about 110 px) re-encoded at quality 30 fall to 0.58, so crops are upscaled to 224
px, as phone photos are larger than the backbone's input."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from runway_cnn.audit import audit_dataset
from runway_cnn.errors import RunwayError

CLASSES = ("astronaut", "coffee", "chelsea", "china")
SIDE = 224  # a crop is upscaled to this side: a phone photo is larger than the backbone's input


def _photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
            "china": load_sample_image("china.jpg")}


def _crops(photo: np.ndarray, rng: np.random.Generator, rows: int = 3, cols: int = 4):
    """One crop per cell of a rows × cols grid (none overlap), upscaled to ``SIDE``."""
    h, w = photo.shape[:2]
    ch, cw = h // rows, w // cols
    for r in range(rows):
        for c in range(cols):
            side = int(min(ch, cw) * rng.uniform(0.85, 1.0))
            y = r * ch + int(rng.integers(0, ch - side + 1))
            x = c * cw + int(rng.integers(0, cw - side + 1))
            yield Image.fromarray(photo[y:y + side, x:x + side]).resize((SIDE, SIDE))


def _copy(image: Image.Image, kind: str) -> bytes:
    """A planted near copy: re-encoded at JPEG quality 30, resized to 60 %, or mirrored."""
    out = io.BytesIO()
    if kind == "jpeg":
        image.save(out, "JPEG", quality=30)
    elif kind == "resize":
        image.resize((image.width * 3 // 5, image.height * 3 // 5)).save(out, "JPEG", quality=90)
    else:
        ImageOps.mirror(image).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """``train/`` (9 crops a class) and ``test/`` (3 a class) with, planted: 4 exact copies (2
    in train, 2 across), 12 near copies of 4 photos (each kind within train and across into
    test) and 4 crops moved into the next class's train folder. Audited once, with --fix."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("audit") / "photos"
    family, flipped, exact = {}, set(), set()
    originals: list[tuple[str, Image.Image, str]] = []
    for index, name in enumerate(CLASSES):
        for i, crop in enumerate(_crops(_photos()[name], rng)):
            split = "train" if i < 9 else "test"
            label = name
            if i == 4:  # a label flip: this crop in the next class's folder
                label = CLASSES[(index + 1) % len(CLASSES)]
            source = f"{split}/{label}/{name}_{i:02d}.jpg"
            (root / source).parent.mkdir(parents=True, exist_ok=True)
            crop.save(root / source, quality=92)
            family[source] = source
            if label != name:
                flipped.add(source)
            originals.append((source, crop, name))
    for k, (source, crop, name) in enumerate(o for o in originals if o[0].endswith(("_00.jpg",
                                                                                    "_01.jpg"))):
        if k % 2 == 0:  # exact copies of 4 photos: two in train, two across into test
            target = (f"train/{name}/{name}_copy.jpg" if k % 4 == 0
                      else f"test/{name}/{name}_copy.jpg")
            (root / target).write_bytes((root / source).read_bytes())
            exact.add(frozenset((source, target)))
            family[target] = source
        else:  # near copies of 4 others: one of each kind, two in train and one in test
            for n, kind in enumerate(("jpeg", "resize", "flip")):
                split = "test" if n == (k // 2) % 3 else "train"
                target = f"{split}/{name}/{name}_{kind}.jpg"
                (root / target).write_bytes(_copy(crop, kind))
                family[target] = source
    photos_before = {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*")
                     if p.is_file()}
    out = root.parent / "audit"
    result = audit_dataset(dataset_dir=str(root), output_dir=str(out), fix=True, batch_size=16)
    return {"root": root, "out": out, "result": result, "family": family, "flipped": flipped,
            "exact": exact, "before": photos_before}


def _rates(found: set, truth: set) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(len(found), 1), hit / max(len(truth), 1)


def test_exact_copies_are_all_found_and_nothing_else(planted):
    result = planted["result"]
    found = {frozenset(d["files"]) for d in result["exact_duplicates"]}
    assert found == planted["exact"]  # precision and recall 1
    scopes = sorted(d["scope"] for d in result["exact_duplicates"])
    assert scopes == ["across train|test"] * 2 + ["within train"] * 2


def test_near_copies_are_found_within_and_across_splits(planted):
    result, family = planted["result"], planted["family"]
    pairs = result["near_duplicates"]["pairs"]
    found = {frozenset(p["files"]) for p in pairs}
    planted_pairs = {frozenset((a, b)) for a in family for b in family
                     if a < b and family[a] == family[b]} - planted["exact"]
    precision, recall = _rates(found, planted_pairs)
    print(f"near duplicates: {len(found)} pairs flagged, {len(planted_pairs)} planted, "
          f"precision {precision:.2f}, recall {recall:.2f}")
    assert recall >= 0.8 and precision >= 0.7
    across = [p for p in pairs if frozenset(p["files"]) in planted_pairs
              and p["scope"] == "across train|test"]
    assert across and result["near_duplicates"]["across_splits"] >= len(across)
    agreed = [p["hash_agrees"] for p in pairs if frozenset(p["files"]) in planted_pairs]
    assert np.mean(agreed) >= 0.8  # the perceptual hash confirms the copies (mirrored too)


def test_planted_label_flips_are_the_label_error_candidates(planted):
    result = planted["result"]
    found = {e["file"] for e in result["label_errors"]}
    precision, recall = _rates(found, planted["flipped"])
    print(f"label errors: {len(found)} flagged, {len(planted['flipped'])} planted, "
          f"precision {precision:.2f}, recall {recall:.2f}")
    assert recall >= 0.8 and precision >= 0.7
    for error in result["label_errors"]:
        if error["file"] in planted["flipped"]:  # the suggestion is where the crop came from
            assert error["suggested"] == Path(error["file"]).name.split("_")[0]
            assert error["given"] == Path(error["file"]).parent.name


def test_outputs_name_the_files_and_fix_leaves_the_photos_alone(planted):
    out, result, root = planted["out"], planted["result"], planted["root"]
    saved = json.loads((out / "audit.json").read_text())
    assert saved["exact_duplicates"] == json.loads(json.dumps(result["exact_duplicates"]))
    page = (out / "audit.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 * len(result["exact_duplicates"])
    for error in result["label_errors"]:
        assert error["file"] in page
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    for png in ("nearest_similarity.png", "confusion.png"):
        assert (out / png).stat().st_size > 1000
    with (out / "cleaned_labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = {row["filename"] for row in rows}
    removed = {r["file"] for r in result["fix"]["removed"]}
    assert kept | removed == set(planted["family"]) and not kept & removed
    assert planted["flipped"] <= removed
    for pair in planted["exact"]:  # one copy of each kept, the training one
        assert len(pair & kept) == 1 and any(f.startswith("train/") for f in pair & kept)
    assert all(row["label"] == row["filename"].split("/")[1] for row in rows)
    after = {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    assert after == planted["before"]  # no photo touched, nothing written into the dataset


def test_a_second_audit_reuses_the_features_and_a_run_gives_its_splits(planted, tmp_path):
    out = planted["out"]
    run = tmp_path / "run"
    run.mkdir()
    sources = sorted(planted["family"])  # a "run" that trained on everything but two copies
    held = {"train/astronaut/astronaut_copy.jpg", "train/coffee/coffee_flip.jpg"}
    (run / "splits.json").write_text(json.dumps({
        "train": [{"source": s, "target": 0} for s in sources if s not in held],
        "validation": [{"source": s, "target": 0} for s in sorted(held)]}))
    result = audit_dataset(dataset_dir=str(planted["root"]), output_dir=str(out),
                           train_dir=str(run))
    assert result["features_cached"] and result["seconds"]["features"] < 5
    assert result["splits"].startswith("the run's splits")
    scopes = {frozenset(d["files"]): d["scope"] for d in result["exact_duplicates"]}
    assert scopes[frozenset(("train/astronaut/astronaut_00.jpg",
                             "train/astronaut/astronaut_copy.jpg"))] == "across train|validation"


def test_shortcut_check_and_grouping_notes(planted, tmp_path):
    """One group per class is a note, not a verdict; groups that are rows of a photo's crops
    get both accuracies and a verdict."""
    out = planted["out"]
    result = audit_dataset(dataset_dir=str(planted["root"]), output_dir=str(out),
                           group_by=r"/([a-z]+)/")  # the class folder, in train and test
    check = result["shortcut"]
    assert check["at_risk"] is None and check["labels_in_one_group"] <= len(CLASSES)
    assert any("one group" in note for note in result["notes"])
    result = audit_dataset(dataset_dir=str(planted["root"]), output_dir=str(out),
                           group_by=r"/([a-z]+_[0-9])")  # crops of a grid row: 3 a photo
    check = result["shortcut"]
    assert 0 <= check["group_balanced_accuracy"] <= 1 and check["groups"] >= 12
    assert isinstance(check["at_risk"], bool)


def test_bad_input_is_one_line(planted, tmp_path):
    root = str(planted["root"])
    cases = [(dict(group_by=r"^season(\d+)_"), "matches no file path"),
             (dict(near_duplicate_cosine=1.5), "--near_duplicate_cosine"),
             (dict(output_dir=str(planted["root"] / "inside")), "inside --dataset_dir"),
             (dict(train_dir=str(tmp_path / "nothing")), "splits.json not found")]
    for flags, message in cases:
        flags.setdefault("output_dir", str(planted["out"]))
        with pytest.raises(RunwayError, match=message) as error:
            audit_dataset(dataset_dir=root, **flags)
        assert "\n" not in str(error.value)
    empty_cells = tmp_path / "labels.csv"
    with empty_cells.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label", "show"])
        for i, source in enumerate(sorted(planted["family"])):
            writer.writerow([source, source.split("/")[1], "" if i % 5 == 0 else f"s{i % 7}"])
    result = audit_dataset(dataset_dir=root, labels_csv=str(empty_cells),
                           group_by="column:show", output_dir=str(tmp_path / "csv"))
    assert result["grouping"]["files_in_a_group_of_their_own"] == len(
        range(0, len(planted["family"]), 5))
    process = subprocess.run([sys.executable, "-m", "runway_cnn.audit", "--dataset_dir", root,
                              "--output_dir", str(planted["out"]), "--group_by", "(unclosed"],
                             capture_output=True, text=True)
    assert process.returncode == 2 and "Traceback" not in process.stderr
    said = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and said[0].startswith("error: --group_by '(unclosed'")


def test_confident_learning_counts_the_off_diagonal_by_self_confidence():
    from runway_cnn.audit.findings import confident_learning

    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([[.9, .1], [.8, .2], [.2, .8],  # row 2: labelled 0, confidently 1
                  [.1, .9], [.3, .7], [.45, .55]])
    found = confident_learning(labels, p)
    assert found["thresholds"].round(3).tolist() == [0.633, 0.717]
    assert found["issues"].tolist() == [2]  # row 5 reaches neither threshold: not counted
    assert found["joint"].tolist() == [[2, 1], [0, 1]]


def test_attributes_get_label_errors_per_attribute_and_fix_blanks_the_cell(planted, tmp_path):
    """``--task attributes``: confident learning per attribute; ``--fix`` keeps the photo and
    makes a doubtful cell unknown. (The feature cache of the first audit is reused.)"""
    manifest = tmp_path / "attributes.csv"
    sources = sorted(planted["family"])
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "subject", "half"])
        for i, source in enumerate(sources):
            writer.writerow([source, source.split("/")[1], "odd" if i % 2 else "even"])
    result = audit_dataset(dataset_dir=str(planted["root"]), labels_csv=str(manifest),
                           task="attributes", output_dir=str(planted["out"]), fix=True)
    assert result["features_cached"]
    subject = {e["file"] for e in result["label_errors"] if e["attribute"] == "subject"}
    precision, recall = _rates(subject, planted["flipped"])
    assert recall >= 0.8 and precision >= 0.7
    assert "half" in result["out_of_fold_accuracy"]  # audited, whatever it finds there
    with (planted["out"] / "cleaned_labels.csv").open(newline="") as f:
        rows = {row["filename"]: row for row in csv.DictReader(f)}
    for source in planted["flipped"] & subject:
        assert rows[source]["subject"] == "" and rows[source]["half"] in ("odd", "even")
    assert len(rows) == len(sources) - len(result["fix"]["removed"])


def test_settings_are_checked_as_a_runs_are_one_line_each(tmp_path):
    """The settings an audit shares with finetune are checked by its rules, the audit's own by
    type and range too (a string is not a number: a line, not a TypeError); a task's options
    are taken as finetune takes them, and belong to their task."""
    from runway_cnn.audit import AuditConfig

    cases = [(dict(folds="5"), "--folds '5': must be a whole number"),
             (dict(batch_size=0, folds=1), "--batch_size 0: must be at least 1; --folds 1: "
                                           "must be at least 2"),
             (dict(seed=-1), "--seed -1: must be in"),
             (dict(target_column="price"), "--target_column: not an option of --task "
                                           "single_label"),
             (dict(task="regression", target_column="price", head="mlgcn"),
              "--head: not an option of --task regression")]
    for flags, message in cases:
        with pytest.raises(RunwayError, match=message) as error:
            AuditConfig(dataset_dir=str(tmp_path), **flags)
        assert "\n" not in str(error.value)
    settings = AuditConfig(dataset_dir=str(tmp_path), task="regression",
                           target_column="price").to_dict()
    assert settings["target_column"] == "price" and settings["task"] == "regression"


def _near(a: str, b: str, cosine: float, labels: dict) -> dict:
    return {"files": [a, b], "cosine": cosine, "hash_bits": 3, "hash_agrees": True,
            "same_label": labels[a] == labels[b]}


def test_fix_keeps_one_photo_per_copy_of_a_label_and_never_empties_a_class(tmp_path):
    """Near copies chain across labels (coat/a ~ dress/d): a label conflict, both kept. A copy
    goes only for a kept photo of its label, said as it is (exact = same SHA-1); the label-error
    candidate that is the last photo of its class stays, and a note says so."""
    from types import SimpleNamespace

    from runway_cnn.audit.run import write_fix
    from runway_cnn.tasks import SingleLabelTask

    labels = {"coat/a.jpg": "coat", "coat/b.jpg": "coat", "coat/c.jpg": "coat",
              "dress/d.jpg": "dress", "dress/e.jpg": "dress"}
    sources = sorted(labels)
    audit = SimpleNamespace(sources=sources, split_of=[None] * len(sources), out=tmp_path,
                            config=SimpleNamespace(task="single_label", group_by=None),
                            task=SingleLabelTask(["coat", "dress"]),
                            pool=SimpleNamespace(raw_labels=[labels[s] for s in sources],
                                                 groups=None))
    exact = {"sha1": "s1", "files": ["coat/b.jpg", "coat/c.jpg"]}
    near = [_near("coat/a.jpg", "dress/d.jpg", 0.95, labels),
            _near("coat/a.jpg", "coat/b.jpg", 0.96, labels),
            _near("dress/d.jpg", "dress/e.jpg", 0.97, labels)]
    result = {"exact_duplicates": [exact], "near_duplicates": {"pairs": near}, "notes": [],
              "label_errors": [{"file": "dress/d.jpg", "given": "dress", "suggested": "coat",
                                "fixable": True}]}
    fix = write_fix(audit, result)
    with (tmp_path / "cleaned_labels.csv").open(newline="") as f:
        kept = {row["filename"]: row["label"] for row in csv.DictReader(f)}
    assert set(kept.values()) == {"coat", "dress"} and "dress/d.jpg" in kept
    assert [c["files"] for c in fix["label_conflicts"]] == [["coat/a.jpg", "dress/d.jpg"]]
    assert fix["classes_kept_whole"] == ["dress"]
    assert any("dress" in note and "no photo" in note for note in result["notes"])
    removed = {r["file"]: r["reason"] for r in fix["removed"]}
    assert "dress/e.jpg" in removed and fix["kept"] == len(sources) - len(removed)
    pairs = {frozenset(p["files"]): p["cosine"] for p in near}
    for file, reason in removed.items():
        kind, other = reason.split(" (")[0].split(" of ")
        assert other in kept and labels[other] == labels[file]  # a copy of a kept photo
        if kind == "exact copy":
            assert {file, other} <= set(exact["files"])
        else:
            assert kind == "near copy" and f"cosine {pairs[frozenset((file, other))]}" in reason


# --- bad input, on drawn photos through the tiny test backbone (seconds, not a real model) -----

@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """4 classes × 6 drawn photos, a broken JPEG and a text file named .jpg among them, the
    tiny backbone, and one audit of it with ``--folds 100 --fix``."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_image_folder
    from tiny_models import make_tiny_hub_module

    root = tmp_path_factory.mktemp("drawn")
    hub = make_tiny_hub_module(root / "hub")
    photos = make_image_folder(root / "photos", per_class=6, size=(40, 56))
    (photos / "checks" / "broken.jpg").write_bytes(
        (photos / "checks" / "checks_000.jpg").read_bytes()[:200])
    (photos / "circles" / "notes.jpg").write_text("not a photo")

    def audit(folder, out, **settings):
        return audit_dataset(dataset_dir=str(folder), output_dir=str(out),
                             model_name=f"hub:{hub}", image_size=32, batch_size=16, **settings)
    result = audit(photos, root / "audit", folds=100, fix=True)
    return {"root": root, "photos": photos, "out": root / "audit", "audit": audit,
            "result": result, "model": f"hub:{hub}"}


def test_a_folder_of_the_users_files_is_refused_unless_overwrite(drawn, tmp_path,
                                                                   monkeypatch):
    """The user's cleaned_labels.csv is neither overwritten nor scanned past; --overwrite
    writes into the folder. (The audit's own folder is rewritten as it is: the reruns above.)"""
    from runway_cnn.audit.__main__ import main
    from runway_cnn.training import datasets

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "cleaned_labels.csv").write_text("filename,label\nmy.jpg,coat\n")
    (mine / "lookbook.pdf").write_bytes(b"%PDF")
    scan = datasets.load_dataset
    with monkeypatch.context() as m:
        m.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("scanned"))
        with pytest.raises(RunwayError, match=r"--output_dir .*mine holds files this command "
                                              r"did not write \(cleaned_labels.csv, "
                                              r"lookbook.pdf\)") as error:
            drawn["audit"](drawn["photos"], mine, fix=True)
    assert datasets.load_dataset is scan
    assert "\n" not in str(error.value) and "--overwrite" in str(error.value)
    assert sorted(p.name for p in mine.iterdir()) == ["cleaned_labels.csv", "lookbook.pdf"]
    main(["--dataset_dir", str(drawn["photos"]), "--output_dir", str(mine), "--model_name",
          drawn["model"], "--image_size", "32", "--fix", "--overwrite"])
    assert json.loads((mine / "audit.json").read_text())["format"] == "runway_cnn audit"
    assert (mine / "lookbook.pdf").read_bytes() == b"%PDF"
    assert "checks/checks_000.jpg" in (mine / "cleaned_labels.csv").read_text()


def test_a_folder_where_every_photo_has_an_exact_copy_is_audited(drawn, tmp_path):
    """Every nearest-neighbour cosine is 1: the histogram has one bar, not a traceback."""
    twins = tmp_path / "twins"
    for path in sorted(drawn["photos"].glob("*/*_00[0-2].jpg")):  # 3 photos a class
        (twins / path.parent.name).mkdir(parents=True, exist_ok=True)
        for name in (path.name, f"copy_{path.name}"):
            (twins / path.parent.name / name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    result = drawn["audit"](twins, out, fix=True)
    assert len(result["exact_duplicates"]) == 12 and result["fix"]["kept"] == 12
    assert json.loads((out / "audit.json").read_text())["images"] == 24
    assert (out / "nearest_similarity.png").stat().st_size > 1000


def test_a_changed_photo_is_hashed_and_its_features_computed_again(drawn, tmp_path):
    """A photo replaced by a copy of another (same name, new bytes) is found as a copy on the
    next audit into the same folder: the caches hold what each file was."""
    import shutil

    photos = shutil.copytree(drawn["photos"], tmp_path / "photos")
    out = tmp_path / "out"
    pair = {"hstripes/hstripes_001.jpg", "hstripes/hstripes_002.jpg"}
    first = drawn["audit"](photos, out)
    assert not first["exact_duplicates"]
    (photos / "hstripes/hstripes_001.jpg").write_bytes(
        (photos / "hstripes/hstripes_002.jpg").read_bytes())
    second = drawn["audit"](photos, out)
    assert [set(d["files"]) for d in second["exact_duplicates"]] == [pair]
    assert not second["features_cached"]
    with np.load(out / "features.npz") as saved:
        sources = saved["sources"].tolist()
    features = np.load(out / "features.npy")
    a, b = (sources.index(s) for s in sorted(pair))
    np.testing.assert_allclose(features[a], features[b], rtol=1e-5, atol=1e-6)


def test_the_folds_used_are_reported_not_the_folds_asked(drawn):
    """--folds 100 on classes of 6 photos: 6 folds, said with why, everywhere."""
    from runway_cnn.audit.report import summary_text

    result = drawn["result"]
    assert result["folds"] == {"asked": 100, "used": {"label": 6}}
    assert result["label_error_method"].startswith("confident learning on 6-fold")
    said = [n for n in result["notes"] if "--folds 100" in n]
    assert said == ["--folds 100: 6 used (no class has more than 6 photos)"]
    saved = json.loads((drawn["out"] / "audit.json").read_text())
    assert saved["folds"] == result["folds"] and "100-fold" not in json.dumps(saved)
    page = (drawn["out"] / "audit.html").read_text()
    assert "--folds 100: 6 used (no class" in page and "100-fold" not in page
    assert "note: --folds 100: 6 used" in summary_text(result)


def test_the_files_the_audit_skipped_are_counted_and_named(drawn):
    """The broken JPEG and the text file: in audit.json, the run's data report and one line."""
    from runway_cnn.audit.report import summary_text

    result, out = drawn["result"], drawn["out"]
    skipped = {d["path"]: d["reason"] for d in result["skipped_files"]}
    assert set(skipped) == {"checks/broken.jpg", "circles/notes.jpg"} and result["skipped"] == 2
    assert json.loads((out / "audit.json").read_text())["skipped_files"] == result[
        "skipped_files"]
    assert json.loads((out / "data_report.json").read_text())["skipped"] == result[
        "skipped_files"]
    lines = [line for line in summary_text(result).splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("skipped 2 files")
    assert all(f"{path} ({reason})" in lines[0] for path, reason in skipped.items())


def test_a_regression_audit_fixes_into_the_column_its_csv_reader_reads(drawn, tmp_path):
    """``audit --task regression --target_column price --fix``: the task's option is a flag as
    for finetune, and the cleaned manifest has the target column (not a class ``label``) with
    each kept photo's number, which a regression run's CSV reader reads back."""
    from runway_cnn.audit.__main__ import main
    from runway_cnn.tasks import RegressionTask

    sources = sorted(str(p.relative_to(drawn["photos"]))
                     for p in drawn["photos"].glob("*/*_0*.jpg"))
    prices = {source: f"{10 + 2.5 * i:g}" for i, source in enumerate(sources)}
    manifest = tmp_path / "prices.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "price"])
        writer.writerows(prices.items())
    out = tmp_path / "out"
    result = main(["--dataset_dir", str(drawn["photos"]), "--labels_csv", str(manifest),
                   "--task", "regression", "--target_column", "price", "--output_dir", str(out),
                   "--model_name", drawn["model"], "--image_size", "32", "--fix"])
    assert result["settings"]["target_column"] == "price" and result["labels"] == ["price"]
    assert any("not done for the regression task" in n for n in result["not_done"])
    with (out / "cleaned_labels.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    reader, columns = RegressionTask.csv_reader(target_column="price")
    assert list(rows[0]) == ["filename", *columns] == ["filename", "price"]
    assert len(rows) == result["fix"]["kept"] == len(sources) - len(result["fix"]["removed"])
    assert {row["filename"]: reader(row) for row in rows} == {
        row["filename"]: float(prices[row["filename"]]) for row in rows}
