"""Random splits that keep class proportions (single-label) and their k-fold version; with
``groups`` (see :mod:`runway_cnn.data.groups`) every group stays in one split.

A grouped single-label split is a stratified split of the groups (a group shuffle split, each
group labelled by its most common class): ``ceil(f * groups)`` groups but at least one per
class, so its share of images is near, not at, ``f``; k-fold is scikit-learn's
``StratifiedGroupKFold``. A class whose images all lie in one group cannot be both trained on
and tested: its group stays in training, and a class the folds left out of training gets its
smallest group back. :func:`by_group` makes any splitter of per-row indicator columns
(multi-label, attributes) a grouped one.

Rows of several 0/1 columns (multi-label tags, one-hot attribute values) are split by iterative
stratification (Sechidis et al. 2011, the ``iterative-stratification`` package), so every split
keeps the columns' proportions and rare columns reach every split; with ``groups``, through
:func:`by_group`.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from runway_cnn.errors import DataError


# a splitting rule: (targets, validation_fraction, test_fraction, seed, groups=None) → split
# name → sorted row indices (a task's ``split``, or :func:`stratified_split`)
SplitRule = Callable[..., dict[str, np.ndarray]]


def check_fractions(validation_fraction: float, test_fraction: float) -> None:
    """Split shares a run can carve (class folders and CSV manifests alike): 0 < validation,
    0 <= test and their sum below 1; else one line naming both flags."""
    if not 0 < validation_fraction < 1 or not 0 <= test_fraction < 1 \
            or validation_fraction + test_fraction >= 1:
        raise DataError(f"--validation_fraction {validation_fraction} and --test_fraction "
                        f"{test_fraction}: need 0 < validation, 0 <= test and a sum below 1")


def check_label_counts(counts: dict[str, int], splits: Sequence[str],
                       name: Callable[[str], str], fix: str) -> None:
    """Before a split: each label of ``counts`` (label → images) with images has one for
    each of ``splits``, else it could never be validated or tested (no fraction changes that):
    one line naming it (``name(label)``: its folder, its CSV) and saying to ``fix`` it."""
    few = [label for label, n in counts.items() if 0 < n < len(splits)]
    if few:
        raise DataError(f"{name(few[0])} has {counts[few[0]]} usable image(s), too few for a "
                        f"{'/'.join(splits)} split: {fix}")


def check_labels_reached(counts: dict[str, int], split_counts: dict[str, dict[str, int]],
                         where: str, grouped: bool = False) -> None:
    """After a split: each label of ``counts`` with images has one in every split
    (``split_counts``: split → label → images); a grouped split's validation and test may lack
    one (the grouping notes report it). Else one line naming the split, ``where`` it was carved
    from and the labels."""
    for split, got in split_counts.items():
        missing = [label for label, n in got.items() if not n and counts.get(label)]
        if missing and not (grouped and split != "train"):
            raise DataError(f"the {split} split carved from {where} has no image of label(s) "
                            f"{', '.join(missing)}; add images of them or raise the split "
                            "fractions")


class TooFewGroups(ValueError):
    """A grouped split that cannot hold out ``fraction``: of the groups it could carve from,
    ``usable`` share their stratum (class) with another group; ``needed`` are needed."""

    def __init__(self, usable: int, needed: int, fraction: float):
        super().__init__(f"{usable} groups share their class with another group, {needed} or "
                         f"more needed for a split of {fraction:.2f}")
        self.usable, self.needed, self.fraction = usable, needed, fraction


def stratified_split(labels: np.ndarray, validation_fraction: float, test_fraction: float,
                     seed: int, groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Split → sorted indices. Split sizes are ``ceil(fraction * n)`` but at least one per class.

    Deterministic in ``seed``; no ``"test"`` key when ``test_fraction`` is 0. sklearn's
    ``ValueError`` comes through when there are too few images (or groups) to stratify.
    """
    labels = np.asarray(labels)
    if groups is not None:
        return _grouped_split(labels, np.asarray(groups), validation_fraction, test_fraction,
                              seed)
    index = np.arange(len(labels))
    out = {}
    if test_fraction > 0:
        index, out["test"] = train_test_split(
            index, test_size=_split_size(test_fraction, labels), stratify=labels,
            random_state=seed)
    train, val = train_test_split(index, test_size=_split_size(validation_fraction, labels),
                                  stratify=labels[index], random_state=seed)
    out = {"train": train, "validation": val, **out}
    return {name: np.sort(idx) for name, idx in out.items()}


def kfold_splits(labels: np.ndarray, k: int, seed: int, validation_fraction: float,
                 groups: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """Stratified K-fold: fold i tests on the i-th fold; validation is carved (stratified) from
    the rest, ``validation_fraction`` of the rest. Indices are sorted; deterministic in ``seed``.
    With ``groups``, stratified group K-fold (classes of one group are trained on only)."""
    labels = np.asarray(labels)
    folds = []
    if groups is not None:
        groups = np.asarray(groups)
        pinned = _single_group_rows(labels, groups)
        free = np.flatnonzero(~pinned)
        for rest, test in _quiet(StratifiedGroupKFold(n_splits=k, shuffle=True,
                                                      random_state=seed).split)(
                free, labels[free], groups[free]):
            rest = np.concatenate([free[rest], np.flatnonzero(pinned)])
            train, val = _carve_groups(rest, labels, groups, validation_fraction, seed)
            split = _train_has_every_class(
                {"train": train, "validation": val, "test": free[test]}, labels, groups)
            folds.append({name: np.sort(idx) for name, idx in split.items()})
        return folds
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for rest, test in skf.split(np.zeros(len(labels)), labels):
        train, val = train_test_split(
            rest, test_size=_split_size(validation_fraction, labels[rest]),
            stratify=labels[rest], random_state=seed)
        folds.append({"train": np.sort(train), "validation": np.sort(val), "test": np.sort(test)})
    return folds


def by_group(split: Callable[[np.ndarray], dict | list], indicators: np.ndarray,
             groups: np.ndarray | None):
    """``split`` (indicator rows → split name → indices, or a list of such folds) applied to one
    row per group, the or of its images' indicators, and expanded back to the images; without
    ``groups``, ``split(indicators)``."""
    indicators = np.asarray(indicators)
    if groups is None:
        return split(indicators)
    keys, inverse = np.unique(np.asarray(groups), return_inverse=True)
    per_group = np.zeros((len(keys), indicators.shape[1]), indicators.dtype)
    np.maximum.at(per_group, inverse, indicators)
    result = split(per_group)

    def rows(parts: dict) -> dict:
        return {name: np.flatnonzero(np.isin(inverse, idx)) for name, idx in parts.items()}
    return [rows(fold) for fold in result] if isinstance(result, list) else rows(result)


def multilabel_split(indicators: np.ndarray, validation_fraction: float, test_fraction: float,
                     seed: int, groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A random split by iterative stratification of the 0/1 columns ``indicators``: every split
    keeps their proportions. Sorted indices; deterministic in ``seed``; no ``"test"`` key when
    ``test_fraction`` is 0; with ``groups``, every group stays in one split."""
    return by_group(lambda rows: _iterative_split(rows, validation_fraction, test_fraction, seed),
                    indicators, groups)


def multilabel_kfold_splits(indicators: np.ndarray, k: int, seed: int, validation_fraction: float,
                            groups: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """K folds by iterative stratification of the 0/1 columns ``indicators``, validation carved
    (the same way) from the rest; with ``groups``, every group stays in one split."""
    return by_group(lambda rows: _iterative_kfold(rows, k, seed, validation_fraction),
                    indicators, groups)


def _iterative_split(indicators: np.ndarray, validation_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    def carve(index: np.ndarray, fraction: float, seed: int):
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction,
                                                    random_state=seed)
        keep, out = next(splitter.split(np.zeros(len(index)), indicators[index]))
        return index[keep], index[out]

    indicators = np.asarray(indicators)
    if len(indicators) < 3:
        raise ValueError(f"{len(indicators)} images are too few to split")
    index, out = np.arange(len(indicators)), {}
    if test_fraction > 0:
        index, out["test"] = carve(index, test_fraction, seed)
    train, validation = carve(index, validation_fraction / (1 - test_fraction), seed)
    out = {"train": train, "validation": validation, **out}
    return {name: np.sort(idx) for name, idx in out.items()}


def _iterative_kfold(indicators: np.ndarray, k: int, seed: int,
                     validation_fraction: float) -> list[dict[str, np.ndarray]]:
    from iterstrat.ml_stratifiers import (
        MultilabelStratifiedKFold,
        MultilabelStratifiedShuffleSplit,
    )

    indicators = np.asarray(indicators)
    folds = []
    for rest, test in MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed
                                                ).split(np.zeros(len(indicators)), indicators):
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=validation_fraction,
                                                    random_state=seed)
        keep, validation = next(splitter.split(np.zeros(len(rest)), indicators[rest]))
        folds.append({"train": np.sort(rest[keep]), "validation": np.sort(rest[validation]),
                      "test": np.sort(test)})
    return folds


def _grouped_split(labels: np.ndarray, groups: np.ndarray, validation_fraction: float,
                   test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    pinned = _single_group_rows(labels, groups)
    index, out = np.flatnonzero(~pinned), {}
    if test_fraction > 0:
        index, out["test"] = _carve_groups(index, labels, groups, test_fraction, seed)
    index = np.concatenate([index, np.flatnonzero(pinned)])
    train, validation = _carve_groups(index, labels, groups,
                                      validation_fraction / (1 - test_fraction), seed)
    out = _train_has_every_class({"train": train, "validation": validation, **out}, labels,
                                 groups)
    return {name: np.sort(idx) for name, idx in out.items()}


def _carve_groups(index: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, carved): a stratified split of the groups of ``index`` (each group labelled by its
    most common class), ``ceil(fraction * groups)`` of them but at least one per class; groups
    of classes with one group in ``index`` stay in the rest."""
    keys, inverse = np.unique(groups[index], return_inverse=True)
    counts = np.zeros((len(keys), int(labels.max()) + 1), int)
    np.add.at(counts, (inverse, labels[index]), 1)
    group_label = counts.argmax(axis=1)
    classes, per_class = np.unique(group_label, return_counts=True)
    free = np.flatnonzero(np.isin(group_label, classes[per_class >= 2]))
    size = _split_size(fraction, group_label[free])
    if len(free) == 0 or size >= len(free):
        raise TooFewGroups(len(free), max(size + 1, 2), fraction)
    _, carved = train_test_split(free, test_size=size, stratify=group_label[free],
                                 random_state=seed)
    out = np.isin(inverse, carved)
    return index[~out], index[out]


def _train_has_every_class(split: dict[str, np.ndarray], labels: np.ndarray,
                           groups: np.ndarray) -> dict[str, np.ndarray]:
    """Moves, for each class the other splits took wholly, its smallest group into training."""
    split = dict(split)
    for label in sorted(set(labels.tolist()) - set(labels[split["train"]].tolist())):
        members = [(np.sum(groups == g), str(g), name) for name, idx in split.items()
                   for g in set(groups[idx[labels[idx] == label]].tolist())]
        _, key, name = min(members)
        moving = split[name][groups[split[name]] == key]
        split[name] = np.setdiff1d(split[name], moving)
        split["train"] = np.concatenate([split["train"], moving])
    return split


def _single_group_rows(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Rows whose class has all its images in one group (they can only be trained on)."""
    pinned = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        rows = labels == label
        if len(set(groups[rows].tolist())) < 2:
            pinned |= rows
    return pinned


def _quiet(split):
    """``split`` without scikit-learn's warning that a class has fewer members than folds (a
    grouped split expects it; classes absent from a split are reported by the caller)."""
    def run(*args) -> list:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class",
                                    category=UserWarning)
            return list(split(*args))
    return run


def _split_size(fraction: float, labels: np.ndarray) -> int:
    return max(math.ceil(fraction * len(labels)), len(np.unique(labels)))
