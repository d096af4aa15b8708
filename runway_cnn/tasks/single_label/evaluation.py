"""The single-label task's figures, files and text: top-1 / top-5 / macro-F1, per-class
precision / recall / F1 and the confusion matrix (scikit-learn); matplotlib is imported only to
draw."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn import metrics as skm

WORST_PAIRS = 10  # worst-confused class pairs reported by evaluation


def figures(targets: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]) -> dict:
    """scikit-learn's figures: top-1, top-5, macro-F1, loss, per-class precision / recall / F1
    / support over the classes that occur in the labels or predictions (so a model that knows
    more classes than the data holds is not diluted), the confusion matrix over all classes
    (rows: true class, in label order) and the worst-confused pairs."""
    truth, num_classes = np.asarray(targets).astype(int), len(labels)
    ids = np.arange(num_classes)
    predicted = probabilities.argmax(axis=-1)
    k = min(5, num_classes)
    present = np.union1d(truth, predicted)
    per_class = skm.precision_recall_fscore_support(truth, predicted, labels=present,
                                                    zero_division=0)
    confusion = skm.confusion_matrix(truth, predicted, labels=ids)
    totals = confusion.sum(axis=1)
    pairs = sorted(((int(confusion[i, j]), i, j) for i in ids for j in ids
                    if i != j and confusion[i, j]),
                   key=lambda t: (-t[0], -t[0] / totals[t[1]], t[1], t[2]))
    return {
        "num_examples": int(len(truth)),
        "top1": float(skm.accuracy_score(truth, predicted)),
        "top5": float(skm.top_k_accuracy_score(truth, probabilities, k=k, labels=ids))
        if k < num_classes else 1.0,
        "top5_k": k,
        "macro_f1": float(skm.f1_score(truth, predicted, average="macro", labels=present,
                                       zero_division=0)),
        "loss": float(-np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth],
                                              1e-12, 1.0)))),
        "per_class": {labels[c]: {"precision": float(p), "recall": float(r), "f1": float(f),
                                  "support": int(n)}
                      for c, p, r, f, n in zip(present, *per_class)},
        "confusion_matrix": confusion.tolist(),
        "worst_confusions": [{"true": labels[i], "predicted": labels[j], "count": n,
                              "share_of_true": float(n / totals[i])}
                             for n, i, j in pairs[:WORST_PAIRS]],
    }


def prediction_rows(sources: Sequence[str], targets: np.ndarray, scores: np.ndarray,
                    labels: Sequence[str]) -> list[dict]:
    predicted = scores.argmax(axis=1)
    return [{"source": s, "label": labels[t], "predicted": labels[p],
             "score": float(scores[i, p])}
            for i, (s, t, p) in enumerate(zip(sources, np.asarray(targets, int), predicted))]


def confident_errors(targets: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                     n: int) -> dict[str, list[tuple[int, int, str]]]:
    """Per true class, its images predicted as another class, highest predicted probability
    first; the map is the predicted class's."""
    targets, predicted = np.asarray(targets, int), scores.argmax(axis=1)
    errors = {}
    for c, name in enumerate(labels):
        wrong = np.flatnonzero((targets == c) & (predicted != c))
        wrong = wrong[np.argsort(-scores[wrong, predicted[wrong]], kind="stable")][:n]
        if len(wrong):
            errors[name] = [(int(i), int(predicted[i]), f"{name} → {labels[predicted[i]]} "
                             f"{scores[i, predicted[i]]:.2f}") for i in wrong]
    return errors


def write_files(figures: dict, output_dir: Path, title: str, labels: Sequence[str]) -> None:
    """``per_class.csv``, ``confusion_matrix.csv`` and ``confusion_matrix.png`` (normalised per
    true class, the classes that occur)."""
    with (output_dir / "per_class.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for name, m in figures["per_class"].items():
            writer.writerow([name, m["precision"], m["recall"], m["f1"], m["support"]])
    with (output_dir / "confusion_matrix.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *labels])
        writer.writerows([name, *row] for name, row in zip(labels, figures["confusion_matrix"]))
    _plot_confusion(np.asarray(figures["confusion_matrix"]), labels,
                   output_dir / "confusion_matrix.png", f"{title}: top-1 {figures['top1']:.3f}")


def headline(figures: dict) -> str:
    return (f"top1 {figures['top1']:.3f}  top{figures.get('top5_k', 5)} {figures['top5']:.3f}"
            f"  macro-F1 {figures['macro_f1']:.3f}")


def format_figures(figures: dict) -> list[str]:
    """The per-class table and the worst-confused pairs."""
    width = max([len(c) for c in figures["per_class"]] + [5])
    lines = [f"{'class':{width}s}  precision  recall     f1  support"]
    for name, m in figures["per_class"].items():
        lines.append(f"{name:{width}s}  {m['precision']:9.3f}  {m['recall']:6.3f}  "
                     f"{m['f1']:5.3f}  {m['support']:7d}")
    if figures["worst_confusions"]:
        lines += ["", "most confused (true → predicted: images, share of the true class):"]
        lines += [f"  {p['true']} → {p['predicted']}: {p['count']} ({p['share_of_true']:.0%})"
                  for p in figures["worst_confusions"]]
    return lines


def combine(figures: Sequence[dict], output_dir: Path, title: str,
            labels: Sequence[str]) -> dict:
    """The test confusion matrices summed over an experiment's runs, and their PNG."""
    confusion = np.sum([f["confusion_matrix"] for f in figures], axis=0)
    _plot_confusion(confusion, labels, output_dir / "confusion_matrix.png", title)
    return {"confusion_matrix": confusion.tolist()}


def _plot_confusion(matrix: np.ndarray, labels: Sequence[str], output: Path, title: str) -> None:
    """The confusion matrix of the classes that occur (in a row or a column)."""
    from runway_cnn.plots import plot_confusion_matrix  # matplotlib only when drawing

    shown = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))
    plot_confusion_matrix(matrix[np.ix_(shown, shown)], [labels[i] for i in shown], output,
                          title=title)
