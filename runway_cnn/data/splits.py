"""Random splits that keep class proportions (single-label) and their k-fold version."""
from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split


def stratified_split(labels: np.ndarray, validation_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Split → sorted indices. Split sizes are ``ceil(fraction * n)`` but at least one per class.

    Deterministic in ``seed``; no ``"test"`` key when ``test_fraction`` is 0. sklearn's
    ``ValueError`` comes through when there are too few images to stratify.
    """
    labels = np.asarray(labels)
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


def kfold_splits(labels: np.ndarray, k: int, seed: int,
                 validation_fraction: float) -> list[dict[str, np.ndarray]]:
    """Stratified K-fold: fold i tests on the i-th fold; validation is carved (stratified) from
    the rest, ``validation_fraction`` of the rest. Indices are sorted; deterministic in ``seed``."""
    labels = np.asarray(labels)
    folds = []
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for rest, test in skf.split(np.zeros(len(labels)), labels):
        train, val = train_test_split(
            rest, test_size=_split_size(validation_fraction, labels[rest]),
            stratify=labels[rest], random_state=seed)
        folds.append({"train": np.sort(train), "validation": np.sort(val), "test": np.sort(test)})
    return folds


def _split_size(fraction: float, labels: np.ndarray) -> int:
    return max(math.ceil(fraction * len(labels)), len(np.unique(labels)))
