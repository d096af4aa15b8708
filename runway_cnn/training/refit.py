"""Refit after selection (scikit-learn's ``refit=True``, AutoGluon's ``refit_full``): once
validation has chosen the regularisation, whether stage 2 is kept and the thresholds, the model
that is exported learns again from more of the labelled photos with those choices, so that it is
not left without the 10–30 % held out to choose and to measure. The figures a run reports stay
those of the model trained on the training split: they are the estimate for the export.

``--refit``:

- ``auto`` (the default): training + validation, and the test split too when the run made it
  itself; a test split the user gave (a ``test/`` folder, a TFRecord dataset's) is never
  trained on;
- ``train_val``: training + validation (a test split then measures the export itself);
- ``all``: every split, a user's test split included (its figures then describe photos the
  export learned from, and the run says so);
- ``none``: the export is the model trained on the training split.

After a kept stage 2, ``--refit_stage2 head`` (the default) refits a head on the fine-tuned
backbone's features; ``whole`` repeats both stages on the refit photos.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from runway_cnn.data.dataset import ImageDataset, Split
from runway_cnn.data.pipeline import content_keys
from runway_cnn.errors import RunwayError
from runway_cnn.train_dir import TrainDir

REFIT_RULES = ("auto", "none", "train_val", "all")
REFIT_STAGE2 = ("head", "whole")  # what a refit after a kept stage 2 trains (--refit_stage2)


def given_test_split(dataset: ImageDataset) -> bool:
    """Whether the test split was given to the run (a ``test/`` folder; a TFRecord dataset's,
    which ``datasets convert`` made) rather than carved by the run."""
    settings = dataset.split_settings
    return "test" in settings.get("given_splits", []) or bool(settings.get("tfrecords"))


def refit_splits(rule: str, dataset: ImageDataset) -> tuple[tuple[str, ...], str | None]:
    """The splits ``--refit rule`` trains the exported model on, and a line to print about
    them (or None); a rule the dataset cannot follow is a one-line error."""
    present = [name for name in ("train", "validation", "test") if name in dataset.splits
               and len(dataset.splits[name])]
    if rule not in REFIT_RULES:
        raise RunwayError(f"--refit {rule!r}: use one of {', '.join(REFIT_RULES)}")
    if rule == "none":
        return ("train",), None
    if "validation" not in present:
        if rule == "train_val":
            raise RunwayError("--refit train_val: this run has no validation split to add; "
                              "use --refit none")
        return ("train",), None
    given = given_test_split(dataset)
    if rule == "train_val" or (rule == "auto" and (given or "test" not in present)):
        return ("train", "validation"), None
    names = tuple(present)
    note = None
    if rule == "all" and given and "test" in present:
        note = ("--refit all: the export also learns from the test split you gave, so its test "
                "figures describe photos the export learned from, not an estimate")
    return names, note


def union(dataset: ImageDataset, names: Sequence[str]) -> Split:
    """The splits ``names`` of ``dataset`` as one split, in that order."""
    parts = [dataset.splits[name] for name in names]
    raw = None if any(p.raw_labels is None for p in parts) else \
        [label for p in parts for label in p.raw_labels]
    groups = None if any(p.groups is None for p in parts) else \
        np.concatenate([p.groups for p in parts])
    return Split([path for p in parts for path in p.paths],
                 np.concatenate([np.asarray(p.targets) for p in parts]),
                 [src for p in parts for src in p.sources], raw, groups)


def learned_record(dataset: ImageDataset, names: Sequence[str], rule: str) -> dict:
    """What an export learned from, for ``metrics.json``, the export's metadata and the line
    a run prints (:func:`describe`): the splits ``names`` of ``dataset`` and their photos."""
    by_split = {name: len(dataset.splits[name]) for name in names}
    return {"splits": list(names), "images": sum(by_split.values()),
            "images_by_split": by_split, "rule": rule, "dataset_root": str(dataset.root)}


def write_learned_keys(train_dir: Path, split: Split) -> None:
    """Records the content keys of the photos of ``split`` (the photos the export learned
    from) in the train dir, for the export to carry (``evaluate`` matches photos by them)."""
    TrainDir(train_dir).learned.write_text("\n".join(content_keys(split.paths)) + "\n")


def read_learned_keys(train_dir: Path) -> list[str] | None:
    """The content keys :func:`write_learned_keys` recorded; None for a run that has none."""
    path = TrainDir(train_dir).learned
    return path.read_text().split() if path.exists() else None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def combine_choices(records: Sequence[dict]) -> dict:
    """One choice from several runs' (an experiment's splits): each number the median of the
    runs' (regularisation strengths: C, alpha), a dict of numbers per key (an attribute's C), a
    list of numbers per position (per-label thresholds), anything else the first run's; what
    was tried is dropped."""
    combined = dict(records[0])
    for key, value in records[0].items():
        values = [r[key] for r in records if key in r]
        if key == "tried":
            combined.pop(key)
        elif _number(value):
            combined[key] = float(np.median(values))
        elif isinstance(value, dict) and value and all(map(_number, value.values())):
            combined[key] = {k: float(np.median([v[k] for v in values if k in v]))
                             for k in value}
        elif isinstance(value, list) and value and all(map(_number, value)) and \
                all(isinstance(v, list) and len(v) == len(value) for v in values):
            combined[key] = np.median(np.asarray(values, np.float64), axis=0).tolist()
    return combined


def describe(record: dict) -> str:
    """The line a run (or an experiment) prints about what its export learned from."""
    if "runs" in record:  # an experiment's one export
        return (f"export: learned from all {record['images']} labelled photos: {record['what']}"
                + (f"; {record['why']}" if record.get("why") else ""))
    learned = f"export: learned from {' + '.join(record['splits'])} ({record['images']} photos)"
    if not record.get("refit"):
        return f"{learned}, not refit" + (f" ({record['why']})" if record.get("why") else "")
    counts = record["images_by_split"]
    return (f"{learned}, refit with the choices made on validation ({record['what']}); the "
            "validation and test figures above are of the model trained on train alone "
            f"({counts['train']} photos), the estimate for the export")
