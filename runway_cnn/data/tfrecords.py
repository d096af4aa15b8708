"""Sharded TFRecords of a scanned dataset (TF-Slim's ``download_and_convert_data``), and reading
them back as an :class:`ImageDataset` whose images are records, not files.

A TFRecord directory holds ``<split>-00000-of-000NN.tfrecord`` shards, ``labels.txt`` (the
vocabulary) and ``dataset.json`` (task, labels, target shape, counts and shards per split, the
scan's data report). Each ``tf.train.Example`` holds the encoded image (the file's own bytes, or
the folder scan's PNG conversion), its filename, height and width, the label text as the source
gave it (JSON) and the task's targets (``image/target``; integer targets also carry
``image/target_mask``, 0 where a value is unknown) and, when converted with ``--group_by``, its
group (``image/group``), so splits drawn from the records keep groups apart too. An image of such a dataset is referred to as
``tfrecord:<shard>#<record number>``; :mod:`runway_cnn.data.pipeline` streams those.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.images import usable_cores
from runway_cnn.errors import DataError, first_line
from runway_cnn.output_checks import Inputs, check_output_dir, is_nobodys_work
from runway_cnn.progress import ImageProgress

DESCRIPTOR = "dataset.json"
VOCABULARY = "labels.txt"
RECORD_PREFIX = "tfrecord:"
FORMAT = "runway_cnn tfrecords"


def is_tfrecord_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory :func:`write_tfrecords` wrote: it has the descriptor, or
    ``*.tfrecord`` shards (whose missing descriptor :func:`read_descriptor` then names)."""
    path = Path(path)
    return (path / DESCRIPTOR).is_file() or (path.is_dir() and _has_shards(path))


def _has_shards(path: Path) -> bool:
    return next(path.glob("*.tfrecord"), None) is not None


def record_ref(shard: str, number: int) -> str:
    """How a split refers to record ``number`` of ``shard`` (in place of a file path)."""
    return f"{RECORD_PREFIX}{shard}#{number}"


def shard_names(split: str, count: int) -> list[str]:
    return [f"{split}-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)]


def _example(path: str, source: str, raw_label: Any, target: np.ndarray,
             group: str | None = None) -> bytes:
    """One image's serialized ``tf.train.Example`` (with its ``--group_by`` key, if any)."""
    data = Path(path).read_bytes()
    with Image.open(path) as image:
        width, height, kind = image.width, image.height, (image.format or "").lower()
    target = np.asarray(target).reshape(-1)
    feature = {
        "image/encoded": _bytes(data), "image/format": _bytes(kind.encode()),
        "image/filename": _bytes(source.encode()),
        "image/height": _ints([height]), "image/width": _ints([width]),
        "image/label_text": _bytes(json.dumps(raw_label, ensure_ascii=False).encode()),
    }
    if group is not None:
        feature["image/group"] = _bytes(group.encode("utf-8", "surrogateescape"))
    if target.dtype.kind in "iu":
        feature["image/target"] = _ints(target)
        feature["image/target_mask"] = _ints(target >= 0)
    else:
        feature["image/target"] = tf.train.Feature(float_list=tf.train.FloatList(value=target))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def check_records_output(output_dir: str | Path, num_shards: int, inputs: Inputs = ()) -> Path:
    """The absolute folder :func:`write_tfrecords` may write into: a new or empty folder, not a
    file nor under one, with ``num_shards`` ≥ 1; checked before any work (a one-line error
    naming the flag). It may not sit inside (nor hold) an input, ``inputs``: (flag, path)."""
    if num_shards < 1:
        raise DataError(f"--num_shards must be at least 1, not {num_shards}")
    check_output_dir(output_dir, "--output_dir", inputs)
    output = Path(output_dir).expanduser().resolve()
    if output.is_dir() and any(not is_nobodys_work(p.name) for p in output.iterdir()):
        raise DataError(f"--output_dir {output} is not empty: give a new or empty folder")
    return output


def write_tfrecords(dataset: ImageDataset, output_dir: str | Path, num_shards: int,
                    task: dict, seed: int = 0, workers: int | None = None,
                    progress: bool = True) -> dict:
    """Writes every split of ``dataset`` into ``min(num_shards, images)`` shards, the vocabulary
    and the descriptor; returns the descriptor. ``task`` is the task's config (name, labels,
    options). Each split's images are shuffled (``seed``) before they are dealt into shards, so
    that a shard holds every class and a bounded shuffle buffer mixes well. Images are read and
    encoded by ``workers`` threads (default: one per usable core); a progress bar of images goes
    to stderr."""
    output = check_records_output(output_dir, num_shards)
    output.mkdir(parents=True, exist_ok=True)
    total = sum(len(s) for s in dataset.splits.values())
    bar = ImageProgress(total) if progress and total else None
    splits = {}
    with ThreadPoolExecutor(max(1, workers or usable_cores())) as pool:
        for name, split in dataset.splits.items():
            names = shard_names(name, max(1, min(num_shards, len(split))))
            order = np.random.default_rng(seed).permutation(len(split))
            for shard, index in zip(names, np.array_split(order, len(names))):
                records = pool.map(lambda i: _example(
                    split.paths[i], split.sources[i], split.raw_labels[i], split.targets[i],
                    None if split.groups is None else split.groups[i]), index)
                with tf.io.TFRecordWriter(str(output / shard)) as writer:
                    for record in records:
                        writer.write(record)
                        if bar is not None:
                            bar.add(1)
            splits[name] = {"count": len(split), "shards": names,
                            "label_counts": dataset.count_labels(split.targets)}
    first = next(iter(dataset.splits.values()))
    descriptor = {"format": FORMAT, "version": 1, "task": task, "labels": list(dataset.labels),
                  "target": {"dtype": str(first.targets.dtype),
                             "shape": list(first.targets.shape[1:])},
                  "splits": splits, "source": str(dataset.root),
                  "split_settings": dataset.split_settings, "data_report": dataset.report()}
    (output / VOCABULARY).write_text("".join(f"{label}\n" for label in dataset.labels))
    (output / DESCRIPTOR).write_text(json.dumps(descriptor, indent=2, ensure_ascii=False))
    return descriptor


def read_descriptor(directory: str | Path) -> dict:
    """A TFRecord directory's ``dataset.json``, with every key reading the records needs; a
    missing, damaged or incomplete one is a :class:`DataError` naming it (and the key)."""
    path = Path(directory) / DESCRIPTOR
    if not path.exists() and _has_shards(Path(directory)):
        raise DataError(f"records folder {Path(directory)} has .tfrecord shards but no "
                        f"{DESCRIPTOR} (their labels and splits): restore it, or convert the "
                        "dataset again with: python -m runway_cnn.datasets convert")
    try:
        descriptor = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {first_line(error)}") from None
    if not isinstance(descriptor, dict) or descriptor.get("format") != FORMAT:
        raise DataError(f"{path} is not a runway_cnn TFRecord descriptor (convert the dataset "
                        "with: python -m runway_cnn.datasets convert)")
    _check_keys(descriptor, path)
    return descriptor


def _check_keys(descriptor: dict, path: Path) -> None:
    """Every key (and its type) :func:`read_tfrecord_dataset` and a run use."""
    def need(mapping: dict, key: str, kind: type, where: str = "") -> Any:
        if key not in mapping:
            raise DataError(f"{path} lacks the key {key!r}{where} (restore the file, or convert "
                            "the dataset again)")
        if not isinstance(mapping[key], kind) or isinstance(mapping[key], bool):
            raise DataError(f"{path}: {key!r}{where} is not a {kind.__name__}")
        return mapping[key]

    need(need(descriptor, "task", dict), "task", str, " of 'task'")
    need(descriptor, "labels", list)
    target = need(descriptor, "target", dict)
    need(target, "shape", list, " of 'target'")
    try:
        np.dtype(need(target, "dtype", str, " of 'target'"))
    except TypeError:
        raise DataError(f"{path}: 'dtype' of 'target' is {target['dtype']!r}, not a "
                        "NumPy type") from None
    for name, info in need(descriptor, "splits", dict).items():
        need(descriptor["splits"], name, dict, " of 'splits'")
        need(info, "count", int, f" of split {name!r}")
        need(info, "shards", list, f" of split {name!r}")


def read_tfrecord_dataset(directory: str | Path) -> tuple[ImageDataset, dict]:
    """The dataset a TFRecord directory holds (every record's filename, label text and target
    read once, not its image) and its descriptor. A missing or damaged shard, or counts that
    disagree with the descriptor, is a :class:`DataError` naming the shard."""
    root = Path(directory).expanduser().resolve()
    descriptor = read_descriptor(root)
    shape, dtype = descriptor["target"]["shape"], np.dtype(descriptor["target"]["dtype"])
    meta = {"image/filename": tf.io.FixedLenFeature([], tf.string),
            "image/label_text": tf.io.FixedLenFeature([], tf.string),
            "image/group": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "image/target": tf.io.RaggedFeature(tf.int64 if dtype.kind in "iu" else tf.float32)}
    splits = {}
    for name, info in descriptor["splits"].items():
        paths, sources, raw, targets, groups = [], [], [], [], []
        for shard in info["shards"]:
            path = str(root / shard)
            try:
                ds = tf.data.TFRecordDataset(path).map(
                    lambda r: tf.io.parse_single_example(r, meta),
                    num_parallel_calls=tf.data.AUTOTUNE)
                for number, row in enumerate(ds.as_numpy_iterator()):
                    paths.append(record_ref(path, number))
                    sources.append(row["image/filename"].decode())
                    raw.append(_tuples(json.loads(row["image/label_text"])))
                    targets.append(row["image/target"])
                    groups.append(row["image/group"].decode("utf-8", "surrogateescape"))
            except (tf.errors.OpError, ValueError) as error:
                raise DataError(f"TFRecord shard {path} is missing or damaged: "
                                f"{first_line(getattr(error, 'message', error))}") from None
        if len(paths) != info["count"]:
            raise DataError(f"{root}: split {name!r} has {len(paths)} records, "
                            f"{DESCRIPTOR} says {info['count']} (a shard was changed)")
        array = np.array(targets, np.float64).reshape([len(paths), *shape]).astype(dtype)
        grouped = "grouping" in descriptor.get("split_settings", {})
        splits[name] = Split(paths, array, sources, raw,
                             np.array(groups, dtype=object) if grouped else None)
    report = descriptor.get("data_report", {})
    dataset = ImageDataset(root, list(descriptor["labels"]), splits,
                           list(report.get("skipped", [])), list(report.get("converted", [])),
                           list(report.get("ignored", [])),
                           {**descriptor.get("split_settings", {}), "tfrecords": str(root)})
    return dataset, descriptor


def _tuples(value: Any) -> Any:
    """JSON's lists back to the tuples a task's raw labels are."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
