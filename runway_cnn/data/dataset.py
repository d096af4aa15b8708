"""A scanned dataset: the usable images of each split with their targets, and the report of what
was skipped, converted or ignored. Sources (class folders, CSV manifests) build it; the task's
targets are one array row per image, whatever their shape."""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

RELIABLE_SPLIT = 20  # photos: figures on a validation or test split of fewer get a warning


@dataclass
class Split:
    """The images of one split, in a fixed order."""

    paths: list[str]  # absolute paths tf.io.decode_image reads as RGB (converted copies if needed)
    targets: np.ndarray  # one row per image: a class id, a multi-hot vector, attribute values …
    sources: list[str]  # original files, relative to the dataset root
    raw_labels: list | None = None  # what the source said (a class folder's name, a CSV cell)
    groups: np.ndarray | None = None  # --group_by's key per image (photos that stay together)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: np.ndarray) -> Split:
        return Split([self.paths[i] for i in index], self.targets[index],
                     [self.sources[i] for i in index],
                     None if self.raw_labels is None else [self.raw_labels[i] for i in index],
                     None if self.groups is None else self.groups[index])


def _no_counts(targets: np.ndarray) -> dict[str, int]:
    return {}


@dataclass
class ImageDataset:
    """A scanned dataset. Keep it alive while its converted copies (``work_dir=None``) are used.

    ``labels`` is the label space the targets index (class names, tags, attribute values);
    ``count_labels`` counts them in one split's targets for the report."""

    root: Path
    labels: list[str]
    splits: dict[str, Split]
    skipped: list[dict]  # {"path", "reason"} per unusable file (hidden files, bad rows included)
    converted: list[dict] = field(default_factory=list)  # {"source", "path", "reason"}
    ignored: list[dict] = field(default_factory=list)  # {"path", "reason"}: not in a class folder
    split_settings: dict = field(default_factory=dict)  # how the splits were made
    count_labels: Callable[[np.ndarray], dict[str, int]] = field(default=_no_counts, repr=False,
                                                                  compare=False)
    notes: dict = field(default_factory=dict)  # source-specific findings for the report
    _tmpdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    def label_counts(self) -> dict[str, dict[str, int]]:
        """split → label → number of images carrying it."""
        return {name: self.count_labels(s.targets) for name, s in self.splits.items()}

    def summary_line(self) -> str:
        sizes = ", ".join(f"{len(s)} {name}" for name, s in self.splits.items())
        converted = f", {len(self.converted)} converted" if self.converted else ""
        line = (f"{self.root}: {sizes} images, {len(self.labels)} labels, "
                f"{len(self.skipped)} skipped{converted} (see data_report.json)")
        grouping = self.split_settings.get("grouping")
        if grouping:
            only, shared = self.labels_only_in_training(), grouping["groups_in_several_splits"]
            line += (f"\nsplit by group (--group_by {grouping['group_by']}): "
                     f"{grouping['groups']} groups, " + (
                         f"{shared} of them in two or more of the given splits (e.g. "
                         f"{grouping['examples_in_several_splits'][0]})" if shared
                         else "none in two splits") + (
                         f"; {len(only)} label(s) have all their images in one group and are "
                         f"trained on, never validated or tested: {', '.join(only[:8])}"
                         + (" …" if len(only) > 8 else "") if only else ""))
        small = self.small_splits()
        if small:
            sizes = ", ".join(f"{name} {n}" for name, n in small.items())
            line += (f"\nwarning: few photos to measure on ({sizes}): figures on fewer than "
                     f"{RELIABLE_SPLIT} are not reliable, one photo moves an accuracy by "
                     f"{100 / min(small.values()):.0f} points; add photos, or raise "
                     "--validation_fraction / --test_fraction")
        return line

    def small_splits(self) -> dict[str, int]:
        """The validation and test splits of fewer than ``RELIABLE_SPLIT`` photos, with their
        sizes."""
        return {name: len(s) for name, s in self.splits.items()
                if name != "train" and 0 < len(s) < RELIABLE_SPLIT}

    def labels_only_in_training(self) -> list[str]:
        """Labels with training images and none in any other split (a grouped split keeps a
        label whose images are all in one group there)."""
        counts = self.label_counts()
        others = [c for name, c in counts.items() if name != "train"]
        return [label for label, n in counts.get("train", {}).items()
                if n and not any(other.get(label) for other in others)]

    def report(self) -> dict:
        """JSON-able description: labels, counts per split, every skipped, converted and ignored
        file."""
        return {"root": str(self.root), "labels": list(self.labels),
                "split_settings": dict(self.split_settings), "counts": self.label_counts(),
                "skipped": list(self.skipped), "converted": list(self.converted),
                "ignored": list(self.ignored), **self.notes,
                **({"labels_only_in_training": self.labels_only_in_training()}
                   if "grouping" in self.split_settings else {})}

    def pooled(self) -> Split:
        """All images of all splits, ordered by source (the index space of experiments)."""
        parts = list(self.splits.values())
        sources = [src for s in parts for src in s.sources]
        order = np.argsort(np.array(sources, dtype=object), kind="stable")
        raw = None if any(s.raw_labels is None for s in parts) else \
            [r for s in parts for r in s.raw_labels]
        groups = None if any(s.groups is None for s in parts) else \
            np.concatenate([s.groups for s in parts])
        every = Split([p for s in parts for p in s.paths],
                      np.concatenate([s.targets for s in parts]), sources, raw, groups)
        return every.subset(order)

    def resplit(self, index_splits: dict[str, np.ndarray]) -> ImageDataset:
        """A copy split by indices into :meth:`pooled` (e.g. one fold of a k-fold)."""
        from runway_cnn.data.groups import describe_split_groups

        pool = self.pooled()
        splits = {name: pool.subset(idx) for name, idx in index_splits.items()}
        settings = {**self.split_settings, "resplit": True}
        if "grouping" in settings:
            settings["grouping"] = {**settings["grouping"], **describe_split_groups(splits)}
        return ImageDataset(self.root, list(self.labels), splits, self.skipped, self.converted,
                            self.ignored, settings, self.count_labels, self.notes, self._tmpdir)

    def ungrouped(self) -> ImageDataset:
        """This dataset as if no ``--group_by`` had been given (random splits to compare)."""
        settings = {k: v for k, v in self.split_settings.items() if k != "grouping"}
        return dataclasses.replace(self, split_settings=settings)
