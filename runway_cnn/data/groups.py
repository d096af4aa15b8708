"""Which photos belong together (one runway show, one shoot, one product's views) and so must stay
in one split: ``--group_by`` turns each image's source into a group key.

Photos of one group share what a model can learn instead of the label (the venue, the light,
the model wearing the look), so a random split that puts a group on both sides measures the
group, not the label. The spec is one of:

- ``folder`` (the file's own folder below the dataset root) or ``folder:N`` (its first ``N``
  folder levels);
- ``column:NAME``, a column of ``--labels_csv`` (a product id, a show);
- anything else, a regular expression searched in the file's path relative to the dataset root
  (``/``-separated); its first group, or the whole match, is the key.

A file the pattern does not match, or a row with an empty group cell, is a group of its own
(counted in the report); a pattern that matches no file is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np

from runway_cnn.data.dataset import Split
from runway_cnn.data.splits import TooFewGroups
from runway_cnn.errors import DataError

COLUMN = "column:"
FOLDER = "folder"


@dataclass
class GroupBy:
    """A parsed ``--group_by`` spec; :meth:`keys` gives the group of each source."""

    spec: str
    column_values: dict[str, str] = field(default_factory=dict)  # source → cell (column:NAME)

    def __post_init__(self):
        self.spec = self.spec.strip()
        if not self.spec:
            raise DataError("--group_by is empty; give folder, folder:N, column:NAME or a "
                            "regular expression")
        self.column = self.spec[len(COLUMN):] if self.spec.startswith(COLUMN) else None
        self.levels: int | None = None
        self.pattern: re.Pattern | None = None
        if self.column is not None:
            if not self.column:
                raise DataError("--group_by column: needs a column name, e.g. column:group")
        elif self.spec == FOLDER or self.spec.startswith(FOLDER + ":"):
            level = self.spec[len(FOLDER) + 1:] or "0"
            if not level.isdigit() or (self.spec != FOLDER and int(level) < 1):
                raise DataError(f"--group_by {self.spec}: folder:N needs a whole number N >= 1")
            self.levels = int(level)
        else:
            try:
                self.pattern = re.compile(self.spec)
            except re.error as error:
                raise DataError(f"--group_by {self.spec!r} is not a regular expression "
                                f"({error})") from None

    @property
    def kind(self) -> str:
        return "column" if self.column is not None else (
            "folder" if self.levels is not None else "pattern")

    def keys(self, sources: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """The group key of each source (relative ``/`` path), and the sources that got a group
        of their own (unmatched by the pattern, or an empty cell)."""
        keys, alone = [], []
        for source in sources:
            key = self.key(source)
            if not key:
                alone.append(source)
                key = "\0" + source  # a group of its own, never equal to a real key
            keys.append(key)
        if sources and len(alone) == len(sources):
            matched = next((s for s in sources if self.pattern and self.pattern.search(s)), None)
            what = (f"column {self.column!r} is empty in every row" if self.column is not None
                    else f"pattern {self.spec!r} captured an empty group for file {matched} (and "
                         "every other file it matches): capture the part that names the group"
                    if matched is not None
                    else f"pattern {self.spec!r} matches no file path (e.g. {sources[0]})")
            raise DataError(f"--group_by: {what}")
        return np.array(keys, dtype=object), alone

    def key(self, source: str) -> str:
        if self.column is not None:
            return self.column_values.get(source, "").strip()
        if self.levels is not None:
            parents = PurePosixPath(source).parts[:-1]
            return "/".join(parents[:self.levels] if self.levels else parents)
        match = self.pattern.search(source)
        if match is None:
            return ""
        return match.group(1) if self.pattern.groups else match.group(0)


def group_splits(splits: dict[str, Split], group_by: GroupBy) -> dict:
    """Sets every split's ``groups`` from its sources; returns what the report records."""
    sources = [source for split in splits.values() for source in split.sources]
    keys, alone = group_by.keys(sources)
    start = 0
    for split in splits.values():
        split.groups = keys[start:start + len(split)]
        start += len(split)
    return {"group_by": group_by.spec, "kind": group_by.kind,
            "groups": len(set(keys.tolist())), "files_in_a_group_of_their_own": len(alone),
            "examples_in_a_group_of_their_own": alone[:5]}


def describe_split_groups(splits: dict[str, Split]) -> dict:
    """Groups per split, and the groups found in more than one split (given split folders can
    hold them; a grouped split never makes one)."""
    members = {name: set(split.groups.tolist()) for name, split in splits.items()
               if split.groups is not None}
    shared = sorted({g for a in members for b in members if a < b
                     for g in members[a] & members[b]})
    return {"groups_per_split": {name: len(keys) for name, keys in members.items()},
            "groups_in_several_splits": len(shared),
            "examples_in_several_splits": [g.lstrip("\0") for g in shared[:5]]}


def too_few_groups(error: TooFewGroups, spec: str, groups: np.ndarray,
                   stratum: str = "class") -> DataError:
    """The one-line error of a ``--group_by`` too coarse to split by: how many groups it made,
    how many (sharing their ``stratum``, the task's word, with another group) are needed."""
    return DataError(f"--group_by {spec!r} makes {len(set(groups.tolist()))} groups, too few to "
                     f"hold out {error.fraction:.0%} of them by group: {error.usable} share their "
                     f"{stratum} with another group, {error.needed} or more needed; give a finer "
                     "--group_by (smaller groups: a show, not a brand)")
