"""Sharded TFRecords: convert → read back for every task, streaming in any order, training on
them to the folder's figures, and bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_folder
from runway_cnn.api import fine_tune
from runway_cnn.data import pipeline
from runway_cnn.data.preprocessing import PreprocessingSpec
from runway_cnn.data.tfrecords import read_tfrecord_dataset
from runway_cnn.errors import DataError
from runway_cnn.inference.evaluation import evaluate_model
from runway_cnn.training.config import FinetuneConfig
from runway_cnn.training.datasets import convert_dataset, load_dataset
from runway_cnn.training.restore import run_split
from helpers import make_multilabel_folder, write_attribute_photos
from tiny_models import make_tiny_hub_module

CLASSES = ["checks", "circles", "hstripes", "vstripes"]
SPEC = PreprocessingSpec(32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A class-folder dataset with a corrupt file and a grayscale PNG the scan converts."""
    root = make_image_folder(tmp_path_factory.mktemp("records") / "looks", CLASSES,
                             per_class=12, size=(40, 56))
    (root / "checks" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("L", (48, 40), 90).save(root / "circles" / "gray.png")
    return root


def _by_source(dataset) -> dict:
    return {src: (split_name, path, np.asarray(t).tolist(), raw)
            for split_name, s in dataset.splits.items()
            for path, src, t, raw in zip(s.paths, s.sources, s.targets, s.raw_labels)}


def _round_trip(tmp_path, num_shards: int, **settings):
    config = FinetuneConfig(train_dir=str(tmp_path / "unused"), validation_fraction=0.25,
                            test_fraction=0.25, **settings)
    scanned, task = load_dataset(config, tmp_path / "scan")
    descriptor = convert_dataset(tmp_path / "records", num_shards, config)
    read, read_descriptor = read_tfrecord_dataset(tmp_path / "records")
    return scanned, task, read, descriptor


@pytest.mark.parametrize("task", ["single_label", "multi_label", "attributes"])
def test_every_image_and_target_round_trips(tmp_path, folder, task):
    if task == "single_label":
        settings = dict(dataset_dir=str(folder))
    elif task == "multi_label":
        photos, labels_csv = make_multilabel_folder(tmp_path / "ml", per_kind=4)
        settings = dict(dataset_dir=str(photos), labels_csv=str(labels_csv), task=task)
    else:
        photos, labels_csv = write_attribute_photos(tmp_path / "attr", per_kind=5)
        settings = dict(dataset_dir=str(photos), labels_csv=str(labels_csv), task=task)
    scanned, task_obj, read, descriptor = _round_trip(tmp_path, 3, **settings)
    assert read.labels == scanned.labels == descriptor["labels"]
    assert (tmp_path / "records" / "labels.txt").read_text().split("\n")[:-1] == read.labels
    before, after = _by_source(scanned), _by_source(read)
    assert sorted(before) == sorted(after)  # nothing lost, nothing added
    for source, (split_name, path, target, raw) in before.items():
        assert after[source][0] == split_name
        assert after[source][2] == target  # the task's targets (masks: -1 cells) as scanned
        assert after[source][3] == raw
    for name, split in read.splits.items():  # shard counts add up
        assert descriptor["splits"][name]["count"] == len(split) == len(scanned.splits[name])
        assert len(descriptor["splits"][name]["shards"]) == min(3, len(split))
        # the records' pixels are the scanned files' pixels
        paths = [before[src][1] for src in split.sources]
        np.testing.assert_array_equal(pipeline.eval_crops(split.paths, SPEC, 8),
                                      pipeline.eval_crops(paths, SPEC, 8))


def test_corrupt_images_are_reported_and_odd_ones_converted(tmp_path, folder):
    scanned, _, read, descriptor = _round_trip(tmp_path, 2, dataset_dir=str(folder))
    report = descriptor["data_report"]
    assert [s["path"] for s in report["skipped"]] == ["checks/broken.jpg"]
    assert [c["source"] for c in report["converted"]] == ["circles/gray.png"]
    assert "checks/broken.jpg" not in _by_source(read)
    gray = [s for s in read.splits.values() if "circles/gray.png" in s.sources][0]
    crop = pipeline.eval_crops([gray.paths[gray.sources.index("circles/gray.png")]], SPEC, 1)
    assert crop.shape == (1, 32, 32, 3) and np.allclose(crop, 90 / 255, atol=1 / 255)
    assert read.report()["skipped"] == report["skipped"]  # a run's data report keeps them


def test_records_stream_in_any_order_with_their_own_labels(tmp_path, folder):
    convert_dataset(tmp_path / "records", 3, FinetuneConfig(dataset_dir=str(folder),
                                                            train_dir=str(tmp_path / "x")))
    read, _ = read_tfrecord_dataset(tmp_path / "records")
    paths = [p for s in read.splits.values() for p in s.paths]
    order = np.random.default_rng(0).permutation(len(paths))[:30]  # a subset, shuffled
    subset = [paths[i] for i in order]
    crops = pipeline.eval_crops(subset, SPEC, 7)
    for k in (0, 13, 29):
        np.testing.assert_array_equal(crops[k], pipeline.eval_crops([subset[k]], SPEC, 1)[0])
    ids = np.arange(len(subset), dtype=np.int32)  # label = position: pairs must match
    for images, labels in pipeline.eval_dataset(subset, ids, SPEC, 8, cache=False):
        np.testing.assert_array_equal(images.numpy(), crops[labels.numpy()])
    for cache in (True, False):  # kept in memory, or streamed with a bounded shuffle buffer
        seen = []
        ds = pipeline.train_dataset(subset, ids, SPEC, 8, None, seed=1, cache=cache)
        for images, labels in ds:
            np.testing.assert_array_equal(images.numpy(), crops[labels.numpy()])
            seen += labels.numpy().tolist()
        assert sorted(seen) == ids.tolist() and seen != ids.tolist()  # each once, shuffled


def test_training_on_records_gives_the_folders_figures(tmp_path, folder):
    hub = make_tiny_hub_module(tmp_path / "hub")
    settings = dict(model_name=f"hub:{hub}", image_size=32, batch_size=8, stage2_epochs=0,
                    validation_fraction=0.25, test_fraction=0.25, verbose=0)
    convert_dataset(tmp_path / "records", 2, FinetuneConfig(
        dataset_dir=str(folder), train_dir=str(tmp_path / "x"), **settings))
    on_files = fine_tune(dataset_dir=str(folder), train_dir=str(tmp_path / "files"), **settings)
    on_records = fine_tune(dataset_dir=str(tmp_path / "records"),
                           train_dir=str(tmp_path / "recs"), **settings)
    for split in ("validation", "test"):
        assert on_records.metrics[split]["top1"] == on_files.metrics[split]["top1"]
        assert on_records.metrics[split]["loss"] == pytest.approx(on_files.metrics[split]["loss"],
                                                                  rel=1e-5)
    evaluated = evaluate_model(on_records.train_dir, tmp_path / "records")  # its test split
    assert evaluated["num_examples"] == on_records.metrics["test"]["num_examples"]
    assert evaluated["top1"] == pytest.approx(on_records.metrics["test"]["top1"])
    restored = run_split(on_records.train_dir, "validation")  # e.g. TFLite's calibration
    records, _ = read_tfrecord_dataset(tmp_path / "records")
    assert restored.paths == records.splits["validation"].paths
    stage2 = fine_tune(dataset_dir=str(tmp_path / "records"), train_dir=str(tmp_path / "recs2"),
                       **{**settings, "stage2_epochs": 1, "unfreeze": "all"})
    assert stage2.metrics["stages"]["stage2"]["unfrozen_weights"] > 0  # trained from records


def test_bad_conversions_and_damaged_shards_are_one_line_errors(tmp_path, folder):
    config = FinetuneConfig(dataset_dir=str(folder), train_dir=str(tmp_path / "x"))
    convert_dataset(tmp_path / "records", 2, config)
    with pytest.raises(DataError, match="not empty"):
        convert_dataset(tmp_path / "records", 2, config)
    with pytest.raises(DataError, match="holds a single_label dataset"):
        load_dataset(FinetuneConfig(dataset_dir=str(tmp_path / "records"), task="multi_label",
                                    train_dir=str(tmp_path / "y")), None)
    shard = tmp_path / "records" / "train-00001-of-00002.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated
    with pytest.raises(DataError, match="train-00001-of-00002.tfrecord is missing or damaged"):
        read_tfrecord_dataset(tmp_path / "records")
    (tmp_path / "records" / "dataset.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a runway_cnn TFRecord descriptor"):
        read_tfrecord_dataset(tmp_path / "records")


def test_convert_command_prints_counts_and_errors_in_one_line(tmp_path, folder):
    out = tmp_path / "records"
    done = subprocess.run([sys.executable, "-m", "runway_cnn.datasets", "convert",
                           "--dataset_dir", str(folder), "--output_dir", str(out),
                           "--num_shards", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = json.loads((out / "dataset.json").read_text())["splits"]
    for name, split in counts.items():
        assert f"{name}: {split['count']} images in 2 shard(s)" in done.stdout
        assert [p.name for p in sorted(out.glob(f"{name}-*.tfrecord"))] == split["shards"]
    assert "1 file(s) skipped" in done.stdout
    again = subprocess.run([sys.executable, "-m", "runway_cnn.datasets", "convert",
                            "--dataset_dir", str(folder), "--output_dir", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    said = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "is not empty" in said[0]
