"""Which source a ``--dataset_dir`` (with ``--labels_csv``) names: a TFRecord directory, a CSV
manifest over an image folder, or class folders. Training and evaluation read a dataset the way
this says."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

from runway_cnn.data.folders import resolve_dataset_dir
from runway_cnn.data.tfrecords import is_tfrecord_dir

SourceKind = Literal["tfrecords", "manifest", "folders"]


class DatasetSource(NamedTuple):
    kind: SourceKind
    root: Path  # the dataset dir, resolved (a registered name's folder, an absolute path)


def dataset_source(dataset_dir: str | Path, labels_csv: str | Path | None = None
                   ) -> DatasetSource:
    """The source of ``dataset_dir``: a TFRecord directory whatever ``labels_csv`` says (its
    labels are in its records; its readers say what a given manifest means), else the manifest
    when one is given, else class folders. A missing dataset is a :class:`DataError`."""
    root = resolve_dataset_dir(str(dataset_dir))
    if is_tfrecord_dir(root):
        return DatasetSource("tfrecords", root)
    return DatasetSource("manifest" if labels_csv else "folders", root)
