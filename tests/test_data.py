"""runway_cnn.data: layouts, splits, validation of every file, conversions, run files."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import make_image_folder
from runway_cnn.data.dataset import ImageDataset
from runway_cnn.data.folders import (DATASETS, SPLITS, resolve_dataset_dir,
                                     scan_image_folder, write_run_files)
from runway_cnn.data.splits import kfold_splits, stratified_split
from runway_cnn.errors import DataError

CLASSES = ["checks", "circles", "hstripes", "vstripes"]


def all_sources(ds: ImageDataset) -> list[str]:
    return sorted(src for s in ds.splits.values() for src in s.sources)


def tf_decode(path: str) -> np.ndarray:
    import tensorflow as tf
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).numpy()


# --- layouts --------------------------------------------------------------------------------

def test_flat_layout(image_folder):
    ds = scan_image_folder(image_folder, seed=0)
    assert ds.root == image_folder.resolve()
    assert ds.labels == CLASSES
    assert list(ds.splits) == list(SPLITS)
    assert len(all_sources(ds)) == 48 and len(set(all_sources(ds))) == 48
    for split in ds.splits.values():
        assert split.targets.dtype == np.int32
        for path, src, label in zip(split.paths, split.sources, split.targets):
            assert os.path.isabs(path) and path == str(ds.root / src)  # plain JPEG: used as is
            assert src.split("/")[0] == ds.labels[label]
    assert not ds.skipped and not ds.converted
    counts = ds.label_counts()
    assert sum(counts["test"].values()) == 5 and sum(counts["validation"].values()) == 5
    assert all(n >= 1 for split in counts.values() for n in split.values())  # stratified
    assert ds.summary_line().startswith(
        f"{ds.root}: 38 train, 5 validation, 5 test images, 4 labels, 0 skipped")


def test_stratification_keeps_class_proportions(tmp_path):
    root = make_image_folder(tmp_path, classes=["a", "b"], per_class=10, size=(16, 16))
    make_image_folder(tmp_path, classes=["b"], per_class=30, size=(16, 16), seed=1)  # b: 30
    counts = scan_image_folder(root, validation_fraction=0.2, test_fraction=0.2).label_counts()
    assert counts["test"] == {"a": 2, "b": 6} and counts["validation"] == {"a": 2, "b": 6}


def test_presplit_layout_uses_given_splits(tmp_path):
    root = make_image_folder(tmp_path, per_class=3, size=(16, 24), splits=SPLITS)
    ds = scan_image_folder(root, validation_fraction=0.5, seed=3)
    assert ds.labels == CLASSES
    for name in SPLITS:
        assert all(src.startswith(f"{name}/") for src in ds.splits[name].sources)
        assert ds.label_counts()[name] == dict.fromkeys(CLASSES, 3)
    assert ds.split_settings["layout"] == "split folders"


def test_presplit_without_validation_carves_it_from_train(tmp_path):
    root = make_image_folder(tmp_path, per_class=10, size=(16, 24), splits=["train", "test"])
    ds = scan_image_folder(root, validation_fraction=0.2)
    assert list(ds.splits) == list(SPLITS)
    assert all(s.startswith("train/") for s in ds.splits["validation"].sources)
    assert ds.label_counts()["validation"] == dict.fromkeys(CLASSES, 2)
    assert ds.label_counts()["test"] == dict.fromkeys(CLASSES, 10)
    assert not set(ds.splits["train"].sources) & set(ds.splits["validation"].sources)


def test_presplit_without_test_and_test_fraction_zero_give_no_test(tmp_path, image_folder):
    root = make_image_folder(tmp_path / "p", per_class=3, size=(16, 24),
                             splits=["train", "validation"])
    assert list(scan_image_folder(root).splits) == ["train", "validation"]
    ds = scan_image_folder(image_folder, test_fraction=0)
    assert list(ds.splits) == ["train", "validation"] and len(all_sources(ds)) == 48


def test_split_is_reproducible_in_seed(image_folder):
    a, b = scan_image_folder(image_folder, seed=7), scan_image_folder(image_folder, seed=7)
    c = scan_image_folder(image_folder, seed=8)
    for name in SPLITS:
        assert a.splits[name].sources == b.splits[name].sources
    assert a.splits["test"].sources != c.splits["test"].sources
    assert a.splits["validation"].sources != c.splits["validation"].sources


def test_stratified_split_function():
    labels = np.repeat(np.arange(3), [20, 30, 50]).astype(np.int32)
    idx = stratified_split(labels, 0.1, 0.2, seed=1)
    assert {k: len(v) for k, v in idx.items()} == {"train": 70, "validation": 10, "test": 20}
    assert np.array_equal(np.sort(np.concatenate(list(idx.values()))), np.arange(100))
    assert np.bincount(labels[idx["test"]]).tolist() == [4, 6, 10]
    assert all(np.array_equal(idx[k], stratified_split(labels, 0.1, 0.2, 1)[k]) for k in idx)
    assert "test" not in stratified_split(labels, 0.1, 0.0, seed=1)


def test_kfold_splits_are_disjoint_stratified_and_cover(image_folder):
    ds = scan_image_folder(image_folder)
    pool = ds.pooled()
    folds = kfold_splits(pool.targets, k=4, seed=0, validation_fraction=0.1)
    assert len(folds) == 4
    tests = np.concatenate([f["test"] for f in folds])
    assert np.array_equal(np.sort(tests), np.arange(48))  # test folds partition the data
    for fold in folds:
        parts = [fold["train"], fold["validation"], fold["test"]]
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(48))
        assert np.bincount(pool.targets[fold["test"]]).tolist() == [3, 3, 3, 3]
        assert len(np.unique(pool.targets[fold["validation"]])) == 4
    again = kfold_splits(pool.targets, k=4, seed=0, validation_fraction=0.1)
    assert all(np.array_equal(f["test"], g["test"]) for f, g in zip(folds, again))
    other = kfold_splits(pool.targets, k=4, seed=1, validation_fraction=0.1)
    assert not np.array_equal(folds[0]["test"], other[0]["test"])
    fold_ds = ds.resplit(folds[2])
    assert fold_ds.splits["test"].sources == [pool.sources[i] for i in folds[2]["test"]]


# --- bad files and bad folders -----------------------------------------------------------

def test_bad_files_are_skipped_and_named(image_folder):
    good = image_folder / "checks" / "checks_000.jpg"
    data = good.read_bytes()
    (image_folder / "checks" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (image_folder / "checks" / "no_eoi.jpg").write_bytes(data[:-2])
    (image_folder / "circles" / "empty.jpg").write_bytes(b"")
    (image_folder / "circles" / "text.jpg").write_text("not a picture")
    (image_folder / "hstripes" / "README.txt").write_text("notes")
    (image_folder / "hstripes" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (image_folder / "vstripes" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # the caller's setting must not hide truncation
    try:
        ds = scan_image_folder(image_folder)
    finally:
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    reasons = {d["path"]: d["reason"] for d in ds.report()["skipped"]}
    assert set(reasons) == {"checks/truncated.jpg", "checks/no_eoi.jpg", "circles/empty.jpg",
                            "circles/text.jpg", "hstripes/README.txt", "hstripes/garbage.png",
                            "vstripes/.DS_Store"}
    assert "truncated" in reasons["checks/truncated.jpg"]
    assert "truncated" in reasons["checks/no_eoi.jpg"]
    assert reasons["circles/empty.jpg"] == "empty file"
    assert reasons["circles/text.jpg"] == "not an image"
    assert reasons["hstripes/README.txt"] == "not an image"
    assert reasons["vstripes/.DS_Store"] == "hidden file"
    assert len(all_sources(ds)) == 48
    assert "7 skipped" in ds.summary_line()


def test_files_outside_class_folders_are_ignored_not_skipped(tmp_path):
    root = make_image_folder(tmp_path, per_class=3, size=(16, 24), splits=SPLITS)
    (root / "LICENSE").write_text("CC0")
    ds = scan_image_folder(root)
    assert ds.report()["ignored"] == [{"path": "LICENSE", "reason": "not in a class folder"}]
    assert not ds.skipped


@pytest.mark.parametrize("case", ["empty_class", "one_class", "unknown_label", "missing_dir",
                                  "all_bad", "too_few", "mixed_layout", "missing_class"])
def test_bad_folders_raise_data_error_naming_the_folder(tmp_path, case):
    root = tmp_path / "ds"
    folder = root
    if case == "empty_class":
        make_image_folder(root, per_class=3, size=(16, 16))
        folder = root / "zebra"
        folder.mkdir()
    elif case == "one_class":
        make_image_folder(root, classes=["only"], per_class=3, size=(16, 16))
    elif case == "unknown_label":
        make_image_folder(root, per_class=3, size=(16, 16), splits=["train", "validation"])
        make_image_folder(root / "validation", classes=["zebra"], per_class=1, size=(16, 16))
        folder = root / "validation"
    elif case == "missing_dir":
        folder = tmp_path / "nowhere"
    elif case == "all_bad":
        make_image_folder(root, per_class=3, size=(16, 16))
        folder = root / "zebra"
        folder.mkdir()
        (folder / "a.jpg").write_text("nope")
    elif case == "too_few":
        make_image_folder(root, per_class=3, size=(16, 16))
        make_image_folder(root, classes=["zebra"], per_class=2, size=(16, 16))
        folder = root / "zebra"
    elif case == "mixed_layout":
        make_image_folder(root, per_class=3, size=(16, 16), splits=["train"])
        make_image_folder(root, classes=["zebra"], per_class=3, size=(16, 16))
    elif case == "missing_class":
        make_image_folder(root, per_class=3, size=(16, 16), splits=["train"])
        make_image_folder(root, classes=CLASSES[:3], per_class=3, size=(16, 16),
                          splits=["test"])
        folder = root / "test"
    with pytest.raises(DataError) as err:
        scan_image_folder(folder if case == "missing_dir" else root, work_dir=tmp_path / "w")
    assert str(folder.resolve() if folder.exists() else folder) in str(err.value)


def test_symlink_outside_root_is_skipped_inside_is_used(image_folder, tmp_path):
    outside = make_image_folder(tmp_path / "outside", classes=["x"], per_class=1, size=(20, 20))
    (image_folder / "checks" / "escape.jpg").symlink_to(outside / "x" / "x_000.jpg")
    (image_folder / "circles" / "escape_dir").symlink_to(outside / "x", target_is_directory=True)
    (image_folder / "circles" / "alias.jpg").symlink_to(image_folder / "circles/circles_000.jpg")
    ds = scan_image_folder(image_folder)
    reasons = {d["path"]: d["reason"] for d in ds.skipped}
    assert reasons == {"checks/escape.jpg": "outside dataset dir",
                       "circles/escape_dir": "outside dataset dir"}
    assert "circles/alias.jpg" in all_sources(ds) and len(all_sources(ds)) == 49
    assert all(".." not in s for s in all_sources(ds))


# --- conversions ------------------------------------------------------------------------------

def _exif_rotated(path: Path) -> None:
    a = np.zeros((30, 60, 3), np.uint8)
    a[:, :30] = (255, 0, 0)  # left half red: on top after orientation 6 (rotate 90° clockwise)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())


def _gif(path: Path) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def _tf_png16(path: Path, colour) -> None:  # PIL cannot write 16-bit RGB PNG
    import tensorflow as tf
    pixels = tf.constant(np.full((30, 40, 3), colour, np.uint16))
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def _solid(mode: str, colour, fmt: str):
    return lambda p: Image.new(mode, (40, 30), colour).save(p, fmt)


CONVERSIONS = {  # file name → (writer, expected (h, w), expected top-left RGB)
    "grey.jpg": (_solid("L", 128, "JPEG"), (30, 40), (128, 128, 128)),
    "rgba.png": (_solid("RGBA", (0, 0, 255, 0), "PNG"), (30, 40), (255, 255, 255)),  # on white
    "palette.png": (lambda p: Image.new("RGB", (40, 30), (0, 255, 0)).convert("P").save(p),
                    (30, 40), (0, 255, 0)),
    "cmyk.jpg": (_solid("CMYK", (0, 255, 255, 0), "JPEG"), (30, 40), (255, 0, 0)),
    "deep16.png": (lambda p: Image.fromarray(np.full((30, 40), 32896, np.uint16)).save(p),
                   (30, 40), (128, 128, 128)),
    "int32.tif": (lambda p: Image.fromarray(np.full((30, 40), 65535, np.int32), "I").save(p),
                  (30, 40), (255, 255, 255)),  # mode I
    "rgb48.png": (lambda p: _tf_png16(p, (65535, 0, 0)), (30, 40), (255, 0, 0)),
    "rotated.jpg": (_exif_rotated, (60, 30), (255, 0, 0)),
    "anim.gif": (_gif, (30, 40), (255, 0, 0)),  # first frame
    "photo.webp": (_solid("RGB", (255, 0, 0), "WEBP"), (30, 40), (255, 0, 0)),
    "photo.tif": (_solid("RGB", (255, 0, 0), "TIFF"), (30, 40), (255, 0, 0)),
}


def test_conversions_write_rgb_png_copies_tf_can_read(image_folder, tmp_path):
    for name, (write, _, _) in CONVERSIONS.items():
        write(image_folder / "checks" / name)
    digests = {n: hashlib.sha1((image_folder / "checks" / n).read_bytes()).hexdigest()
               for n in CONVERSIONS}
    work = tmp_path / "work"
    ds = scan_image_folder(image_folder, work_dir=work)
    assert not ds.skipped
    converted = {d["source"]: d for d in ds.report()["converted"]}
    assert set(converted) == {f"checks/{n}" for n in CONVERSIONS}
    path_of = {src: p for s in ds.splits.values() for src, p in zip(s.sources, s.paths)}
    for name, (_, shape, colour) in CONVERSIONS.items():
        source = f"checks/{name}"
        assert path_of[source] == converted[source]["path"]
        assert path_of[source] == str(work / "converted" / f"{source}.png")
        image = tf_decode(path_of[source])
        assert image.shape == (*shape, 3), name
        assert np.abs(image[2, 2].astype(int) - colour).max() <= 8, (name, image[2, 2])
        with Image.open(path_of[source]) as im:
            assert (im.format, im.mode) == ("PNG", "RGB")
        assert hashlib.sha1((image_folder / source).read_bytes()).hexdigest() == digests[name]
    assert "exif orientation 6" in converted["checks/rotated.jpg"]["reason"].lower()
    image = tf_decode(path_of["checks/rotated.jpg"])
    assert image[50, 15, 0] < 60  # bottom half is the stored image's black right half


def test_plain_rgb_files_are_used_as_they_are(image_folder):
    for fmt, ext in (("PNG", ".png"), ("BMP", ".bmp"), ("JPEG", ".jpeg")):
        Image.new("RGB", (20, 20), (9, 9, 9)).save(image_folder / "checks" / f"plain{ext}", fmt)
    ds = scan_image_folder(image_folder)
    assert not ds.converted and not ds.skipped
    path_of = {src: p for s in ds.splits.values() for src, p in zip(s.sources, s.paths)}
    for ext in (".png", ".bmp", ".jpeg"):
        assert path_of[f"checks/plain{ext}"] == str(ds.root / "checks" / f"plain{ext}")
        assert tf_decode(path_of[f"checks/plain{ext}"]).shape == (20, 20, 3)


def test_converted_copies_live_with_the_dataset_without_work_dir(image_folder):
    _gif(image_folder / "checks" / "anim.gif")
    ds = scan_image_folder(image_folder)
    path = Path(ds.converted[0]["path"])
    assert path.is_file()
    del ds
    assert not path.exists()


# --- run files and registered datasets --------------------------------------------------------

def test_write_run_files(image_folder, tmp_path):
    (image_folder / "checks" / "bad.jpg").write_text("x")
    ds = scan_image_folder(image_folder)
    write_run_files(ds, tmp_path / "run")
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert list(splits) == list(SPLITS)
    for name, items in splits.items():
        assert items == [{"source": s, "target": int(t)}
                         for s, t in zip(ds.splits[name].sources, ds.splits[name].targets)]
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report == json.loads(json.dumps(ds.report()))
    assert report["labels"] == CLASSES and report["root"] == str(ds.root)
    assert report["skipped"] == [{"path": "checks/bad.jpg", "reason": "not an image"}]
    assert report["counts"]["train"] == ds.label_counts()["train"]


def test_resolve_dataset_dir(tmp_path):
    sample = resolve_dataset_dir("clothing_sample")
    assert sample == Path(__file__).resolve().parents[1] / "datasets" / "clothing-sample"
    assert sample.is_dir()
    assert resolve_dataset_dir(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(DataError, match="no_such_set"):
        resolve_dataset_dir("no_such_set")


def test_resolve_dataset_dir_when_sample_is_not_shipped(monkeypatch, tmp_path):
    monkeypatch.setitem(DATASETS._entries, "clothing_sample", tmp_path / "gone")
    with pytest.raises(DataError, match="clothing_sample.*source repository"):
        resolve_dataset_dir("clothing_sample")


def test_shipped_sample_scans_clean():
    ds = scan_image_folder(resolve_dataset_dir("clothing_sample"))
    assert not ds.skipped and not ds.converted
    assert len(ds.labels) == 6
    for name, expected in zip(SPLITS, (40, 10, 10)):
        assert set(ds.label_counts()[name].values()) == {expected}


def test_dataset_name_is_the_folder_name_for_names_and_paths(tmp_path):
    from runway_cnn.data import folders as data

    assert data.dataset_name("clothing_sample") == "clothing-sample"
    assert data.dataset_name(str(tmp_path / "brands") + "/") == "brands"


@pytest.mark.parametrize("name", sorted(CONVERSIONS))
def test_encoded_as_trained_gives_the_bytes_tf_reads_like_training(tmp_path, name):
    import tensorflow as tf

    from runway_cnn.data import images

    write, shape, top_left = CONVERSIONS[name]
    write(tmp_path / name)
    image = tf.io.decode_image(images.encoded_as_trained(tmp_path / name), channels=3,
                               expand_animations=False).numpy()
    assert image.shape[:2] == shape
    np.testing.assert_allclose(image[0, 0], top_left, atol=6)


def test_encoded_as_trained_keeps_plain_and_unreadable_files_as_they_are(tmp_path):
    from runway_cnn.data import images

    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "plain.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("plain.jpg", "text.jpg"):
        assert images.encoded_as_trained(tmp_path / name) == (tmp_path / name).read_bytes()
