"""The audit's arithmetic on frozen features: out-of-fold probabilities of a cross-validated
logistic regression, confident learning (Northcutt, Jiang & Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021), low-density outliers, the most confused
class pairs and the shortcut check (is the group easier to predict than the label?). Arrays in,
plain values out; nothing here reads images or writes files."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler, normalize

from runway_cnn.data.leaks import nearest_neighbours

FOLDS = 5
# Inverse L2 penalty on L2-normalised, standardised features. Out-of-fold log-loss and accuracy
# on clothing-small, runway-brands and zalando brands were best at 0.003 of 0.0003–0.1 (weaker
# penalties give overconfident probabilities and several times more label-error candidates).
C = 0.003
NEIGHBOURS = 10  # for the density of each photo (outliers)


def prepare(features: np.ndarray) -> np.ndarray:
    """L2-normalised, standardised features (what the regressions see)."""
    return StandardScaler().fit_transform(normalize(np.asarray(features, np.float64)))


def fold_count(labels: np.ndarray, folds: int = FOLDS) -> int:
    """The stratified folds ``folds`` gives on ``labels``: no more than the largest class has
    photos (at least 2)."""
    return min(folds, max(2, int(np.bincount(np.asarray(labels)).max())))


def out_of_fold_probabilities(x: np.ndarray, labels: np.ndarray, num_classes: int,
                              groups: np.ndarray | None = None, folds: int = FOLDS,
                              seed: int = 0) -> np.ndarray:
    """``[n, num_classes]`` probabilities of each row from a regression that never saw it
    (stratified k-fold; with ``groups``, stratified group k-fold: no photo of the row's group
    was seen either). A class missing from a fold's training rows gets probability 0 there."""
    labels = np.asarray(labels)
    probabilities = np.zeros((len(labels), num_classes))
    if groups is not None:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        parts = splitter.split(x, labels, groups)
    else:
        splitter = StratifiedKFold(fold_count(labels, folds), shuffle=True, random_state=seed)
        parts = splitter.split(x, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer images than folds
        for train, test in list(parts):
            seen = np.unique(labels[train])
            if len(seen) < 2:
                probabilities[test, seen] = 1.0
                continue
            model = LogisticRegression(C=C, max_iter=1000).fit(x[train], labels[train])
            probabilities[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return probabilities


def confident_learning(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Confident learning's label issues. Per class ``j`` a threshold ``t_j``: the mean
    probability of ``j`` over the rows labelled ``j``. A row labelled ``i`` counts in the
    confident joint ``C[i][j]`` for the ``j`` of highest probability among those at or above
    their threshold; the rows off its diagonal are the issues, ranked by self-confidence (the
    probability of the given label), lowest first.

    Returns ``thresholds``, ``joint`` (``[k, k]`` counts), ``issues`` (row indices, ranked),
    ``suggested`` (per row; -1 where no class reaches its threshold) and ``self_confidence``."""
    labels = np.asarray(labels)
    n, k = probabilities.shape
    thresholds = np.array([probabilities[labels == j, j].mean() if np.any(labels == j) else 1.0
                           for j in range(k)])
    above = probabilities >= thresholds
    confident = above.any(axis=1)
    suggested = np.where(confident, np.where(above, probabilities, -1.0).argmax(axis=1), -1)
    joint = np.zeros((k, k), int)
    np.add.at(joint, (labels[confident], suggested[confident]), 1)
    self_confidence = probabilities[np.arange(n), labels]
    flagged = np.flatnonzero(confident & (suggested != labels))
    issues = flagged[np.argsort(self_confidence[flagged], kind="stable")]
    return {"thresholds": thresholds, "joint": joint, "issues": issues, "suggested": suggested,
            "self_confidence": self_confidence}


def outliers(features: np.ndarray, share: float, k: int = NEIGHBOURS
             ) -> tuple[np.ndarray, np.ndarray]:
    """(rows ranked most isolated first, the ``share`` of them at least one; each row's mean
    cosine distance to its ``k`` nearest neighbours). Low density = far from every neighbour."""
    if len(features) < 3:
        return np.array([], int), np.zeros(len(features))
    _, cosine = nearest_neighbours(features, k)
    distance = 1.0 - cosine.mean(axis=1)
    count = max(1, int(round(share * len(distance))))
    return np.argsort(-distance, kind="stable")[:count], distance


def confused_pairs(labels: np.ndarray, predicted: np.ndarray, names: list[str],
                   top: int = 10) -> tuple[np.ndarray, list[dict]]:
    """The out-of-fold confusion matrix (rows: given label) and the pairs of labels most
    confused with each other: ``share`` is the share of the two labels' photos predicted as the
    other label of the pair (each photo counted once, so in [0, 1])."""
    k = len(names)
    matrix = np.zeros((k, k), int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    support = matrix.sum(axis=1)
    pairs = []
    for a in range(k):
        for b in range(a + 1, k):
            if matrix[a, b] + matrix[b, a]:
                pairs.append({"labels": [names[a], names[b]],
                              "share": round(float((matrix[a, b] + matrix[b, a])
                                                   / (support[a] + support[b])), 4),
                              "images": int(matrix[a, b] + matrix[b, a]),
                              f"{names[a]} → {names[b]}": int(matrix[a, b]),
                              f"{names[b]} → {names[a]}": int(matrix[b, a])})
    pairs.sort(key=lambda p: -p["share"])
    return matrix, pairs[:top]


def label_accuracy(x: np.ndarray, labels: np.ndarray, folds: int = FOLDS,
                   seed: int = 0) -> tuple[float, np.ndarray]:
    """Out-of-fold balanced accuracy of predicting ``labels`` (integers) from ``x`` with plain
    stratified folds, and the out-of-fold predictions."""
    _, labels = np.unique(labels, return_inverse=True)
    probabilities = out_of_fold_probabilities(x, labels, int(labels.max()) + 1, folds=folds,
                                              seed=seed)
    predicted = probabilities.argmax(axis=1)
    return float(balanced_accuracy_score(labels, predicted)), predicted


def shortcut_check(x: np.ndarray, label_columns: list[np.ndarray], groups: np.ndarray,
                   folds: int = FOLDS, seed: int = 0) -> dict:
    """How well the group (a show, a shoot) is predicted from the features against the label,
    both as out-of-fold balanced accuracy on the photos of groups with two or more photos.
    ``label_columns``: one integer column per label question (one for single-label; one per
    attribute or tag otherwise; -1 = unknown), whose balanced accuracies are averaged.
    When the group is as easy as the label, the features carry the group and a figure from a
    split that mixes groups is at risk."""
    keys, group_ids, sizes = np.unique(np.asarray(groups).astype(str), return_inverse=True,
                                       return_counts=True)
    rows = np.flatnonzero(sizes[group_ids] >= 2)
    kept = len(np.unique(group_ids[rows]))
    result = {"groups": int(len(keys)), "groups_with_two_or_more_photos": int(kept),
              "photos": int(len(rows))}
    if kept < 2:
        result["not_done"] = "fewer than two groups with two or more photos"
        return result
    group_accuracy, _ = label_accuracy(x[rows], group_ids[rows], folds, seed)
    scores = []
    for column in label_columns:
        known = rows[np.asarray(column)[rows] >= 0]
        if len(np.unique(column[known])) >= 2:
            scores.append(label_accuracy(x[known], column[known], folds, seed)[0])
    label = float(np.mean(scores)) if scores else float("nan")
    labels_per_question = [len(np.unique(c[rows][c[rows] >= 0])) for c in label_columns]
    result |= {"group_balanced_accuracy": round(group_accuracy, 4),
               "label_balanced_accuracy": round(label, 4),
               "group_chance": round(1.0 / kept, 4),
               "label_chance": round(float(np.mean([1.0 / max(n, 1)
                                                    for n in labels_per_question])), 4),
               "at_risk": bool(group_accuracy >= label)}
    return result
