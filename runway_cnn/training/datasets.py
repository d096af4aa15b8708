"""A run's data and task: class folders, or a CSV manifest read the task's way, turned into the
task's targets and split the task's way."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.folders import carve_splits, scan_image_folder
from runway_cnn.data.groups import GroupBy, describe_split_groups, group_splits, too_few_groups
from runway_cnn.data.manifest import scan_labels_csv
from runway_cnn.data.source import dataset_source
from runway_cnn.data.splits import (
    TooFewGroups,
    check_fractions,
    check_label_counts,
    check_labels_reached,
)
from runway_cnn.data.tfrecords import (
    DESCRIPTOR,
    check_records_output,
    read_tfrecord_dataset,
    write_tfrecords,
)
from runway_cnn.errors import DataError, first_line
from runway_cnn.tasks import TASKS, Task, labels_for_run, task_for_run, task_from_config
from runway_cnn.tasks.base import checked_arguments
from runway_cnn.training.config import FinetuneConfig


def load_dataset(config: FinetuneConfig, work_dir: Path | None,
                 report_path: Path | None = None, make_splits: bool = True
                 ) -> tuple[ImageDataset, Task]:
    """The scanned, split dataset of a run and its task. Converted copies go under
    ``work_dir``; a manifest with no usable row writes its report to ``report_path`` (the run's
    ``data_report.json``) before its error. With ``make_splits=False`` nothing is carved: the
    splits are the given folders (or a TFRecord directory's), else every image is ``"train"``
    (what an audit of the whole dataset needs)."""
    kind, dataset_dir = dataset_source(config.dataset_dir, config.labels_csv)
    settings = config.to_dict()
    if kind == "tfrecords":
        return _tfrecord_dataset(config, dataset_dir)
    if kind == "folders":
        why = TASKS.get(config.task).labels_csv_needed(**config.task_options)
        if why:
            raise DataError(f"--dataset_dir {dataset_dir} without --labels_csv: {why}")
        dataset = scan_image_folder(dataset_dir, validation_fraction=config.validation_fraction,
                                    test_fraction=config.test_fraction, seed=config.seed,
                                    work_dir=work_dir, group_by=config.group_by,
                                    make_splits=False)
        labels = read_labels_file(config.labels_file) if config.labels_file else dataset.labels
        task = task_for_run(config.task, labels, settings)
        for split in dataset.splits.values():  # class folder names → the task's targets
            split.targets = task.targets(split.raw_labels, where=str(dataset.root))
        dataset.labels, dataset.count_labels = task.labels, task.label_counts
        if make_splits:  # the task's splitting rule, as for a CSV
            carve_splits(dataset, task.split, config.validation_fraction, config.test_fraction,
                         config.seed)
        return dataset, task
    if make_splits:
        check_fractions(config.validation_fraction, config.test_fraction)
    task_class = TASKS.get(config.task)
    group_by = GroupBy(config.group_by) if config.group_by else None
    raw_label, columns = task_class.csv_reader(**config.task_options)
    rows = scan_labels_csv(dataset_dir, config.labels_csv, raw_label, work_dir,
                           columns=columns, task=config.task,
                           report_path=report_path,
                           keep_columns=[group_by.column] if group_by and group_by.column else [])
    labels = (read_labels_file(config.labels_file) if config.labels_file
              else labels_for_run(config.task, rows.raw_labels, settings))
    task = task_for_run(config.task, labels, settings)
    targets = task.targets(rows.raw_labels, where=f"--labels_csv {rows.csv_path}")
    counts = task.label_counts(targets)
    if make_splits:  # a run or a conversion (an evaluation may score a constant)
        task.check_learnable(targets, where=f"--labels_csv {rows.csv_path}")
        if task.labels_in_every_split:  # as class folders are checked
            check_label_counts(counts, ("train", "validation") + (
                ("test",) if config.test_fraction > 0 else ()),
                lambda label: f"label {label!r} of --labels_csv {rows.csv_path}",
                "add photos of it, or drop its rows")
    every = Split(rows.paths, targets, rows.sources, rows.raw_labels)
    grouping = None
    if group_by is not None:
        if group_by.column:
            group_by.column_values = dict(zip(rows.sources, rows.columns[group_by.column]))
        grouping = group_splits({"all": every}, group_by)
    notes = {"labels_csv": str(rows.csv_path), "bad_rows": len(rows.bad_rows),
             "unknown_labels": task.unknown_labels(rows.raw_labels)}
    if not make_splits:
        settings = {"layout": "labels csv", "given_splits": []}
        if grouping is not None:
            settings["grouping"] = {**grouping, **describe_split_groups({"train": every})}
        return ImageDataset(rows.root, task.labels, {"train": every}, rows.unusable(),
                            rows.converted, [], settings, count_labels=task.label_counts,
                            notes=notes, _tmpdir=rows.tmpdir), task
    try:
        index = task.split(targets, config.validation_fraction, config.test_fraction,
                           config.seed, groups=every.groups)
    except TooFewGroups as error:
        raise too_few_groups(error, group_by.spec, every.groups, task.stratum) from None
    except ValueError as error:
        raise DataError(f"cannot split the {len(every)} usable rows of {rows.csv_path} "
                        f"({first_line(error)}); add images or change --validation_fraction / "
                        "--test_fraction") from None
    splits = {name: every.subset(idx) for name, idx in index.items()}
    if task.labels_in_every_split:
        check_labels_reached(counts, {name: task.label_counts(split.targets)
                                      for name, split in splits.items()},
                             f"--labels_csv {rows.csv_path}", grouped=grouping is not None)
    absent = [name for name, n in task.label_counts(splits["train"].targets).items() if not n]
    if absent:
        print(f"warning: label(s) {', '.join(absent)} of {rows.csv_path} have no image in the "
              "training split (see data_report.json)", flush=True)
    notes["labels_absent_from_train"] = absent
    split_settings = {"layout": "labels csv", "validation_fraction": config.validation_fraction,
                      "test_fraction": config.test_fraction, "seed": config.seed,
                      "splitter": f"{task.name} task"}
    if grouping is not None:
        split_settings["grouping"] = {**grouping, **describe_split_groups(splits)}
    return ImageDataset(rows.root, task.labels, splits, rows.unusable(), rows.converted, [],
                        split_settings, count_labels=task.label_counts, notes=notes,
                        _tmpdir=rows.tmpdir), task


def _tfrecord_dataset(config: FinetuneConfig, directory: Path) -> tuple[ImageDataset, Task]:
    """A directory ``python -m runway_cnn.datasets convert`` wrote: its splits, targets and task
    as converted (the task must be the run's; ``--labels_csv`` does not apply)."""
    dataset, descriptor = read_records(directory)
    task_config = descriptor["task"]
    if task_config.get("task") != config.task:
        raise DataError(f"{directory} holds a {task_config.get('task')} dataset; run it with "
                        f"--task {task_config.get('task')} (not {config.task})")
    if config.labels_csv:
        raise DataError(f"{directory} is a TFRecord dataset: its labels are in its records, "
                        "leave out --labels_csv")
    converted = dataset.split_settings.get("grouping", {}).get("group_by")
    if config.group_by and config.group_by != converted:
        how = f"with --group_by {converted!r}" if converted else "without --group_by"
        raise DataError(f"{directory} was converted {how} and its records keep that grouping: "
                        f"leave out --group_by, or convert again with --group_by "
                        f"{config.group_by!r}")
    task = task_for_run(config.task, dataset.labels, {**task_config, **config.to_dict()})
    dataset.count_labels = task.label_counts
    return dataset, task


def read_records(directory: str | Path) -> tuple[ImageDataset, dict]:
    """A TFRecord directory's dataset and descriptor (see
    :func:`~runway_cnn.data.tfrecords.read_tfrecord_dataset`), every record checked against
    ``dataset.json``: its target must be what the task and label list there make of the label
    text the record carries. A list reordered or edited since the conversion (which would train
    and export red photos as 'blue') is a :class:`DataError` naming the file and a record."""
    dataset, descriptor = read_tfrecord_dataset(directory)
    where = dataset.root / DESCRIPTOR
    try:
        task = task_from_config({**descriptor["task"], "labels": dataset.labels})
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: its task cannot be rebuilt ({first_line(error)}); restore "
                        "the file or convert the dataset again") from None
    for split in dataset.splits.values():
        if not len(split):
            continue
        given = np.asarray(split.targets).reshape(len(split), -1)
        made = np.asarray(task.targets(split.raw_labels, where=str(where)))
        made = made.reshape(len(split), -1)
        if made.shape != given.shape:
            raise DataError(f"{where}: its label list makes targets of shape {made.shape[1:]}, "
                            f"the records hold {given.shape[1:]} (was the list edited?); "
                            "restore the file or convert the dataset again")
        wrong = np.flatnonzero((made != given).any(axis=1))
        if len(wrong):
            first = wrong[0]
            raise DataError(
                f"{where} does not match its records: {split.paths[first]} carries the label "
                f"{split.raw_labels[first]!r} but its target is another label of the list there "
                f"({len(wrong)} of {len(split)} records disagree: was the list reordered or "
                "edited?); restore the file or convert the dataset again")
    return dataset, descriptor


@checked_arguments
def convert_dataset(output_dir: str | Path, num_shards: int = 4,
                    config: FinetuneConfig | None = None, **settings) -> dict:
    """Scans a dataset the way a run would (``config`` or its fields: ``dataset_dir``,
    ``labels_csv``, ``task``, split fractions, ``seed`` …) and writes it as sharded TFRecords
    into ``output_dir`` (see :mod:`runway_cnn.data.tfrecords`); returns the descriptor."""
    config = config or FinetuneConfig(**settings)
    check_records_output(output_dir, num_shards, config.inputs())  # before the scan: hours
    with tempfile.TemporaryDirectory(prefix="runway_cnn_convert_") as work:
        dataset, task = load_dataset(config, Path(work))
        print(dataset.summary_line().replace(" (see data_report.json)", ""), flush=True)
        return write_tfrecords(dataset, output_dir, num_shards, task.config(), seed=config.seed)


def read_labels_file(path: str | Path) -> list[str]:
    """A vocabulary file: one label a line, blank lines ignored, no duplicates, no control
    characters (a tab inside a label)."""
    try:
        labels = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read --labels_file {path}: {first_line(error)}") from error
    for label in labels:
        try:
            Task.label_text(label)
        except ValueError as error:
            raise DataError(f"--labels_file {path}: {error}") from None
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if not labels or duplicates:
        raise DataError(f"--labels_file {path}: " + (f"labels listed twice: {', '.join(duplicates)}"
                                                     if duplicates else "no labels"))
    return labels

