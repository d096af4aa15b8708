"""The attributes task's figures, files and text: per attribute, on its known cells, accuracy,
macro-F1 and balanced accuracy (scikit-learn's), the confusion matrix and the same three for
always answering the training split's majority value; matplotlib is imported only to draw."""
from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn import metrics as skm

from runway_cnn.tasks.attributes.plots import plot_attribute_scores

FIGURES = ("accuracy", "macro_f1", "balanced_accuracy")


def figures(targets: np.ndarray, scores: np.ndarray, predicted: np.ndarray,
            values: dict[str, list[str]], starts: Sequence[int],
            majority: Sequence[int] | None) -> dict:
    """Per attribute, on its known cells (``targets`` ≥ 0): the figures of the ``predicted``
    value ids, the confusion matrix and the figures of always answering the training split's
    ``majority`` value; the unweighted means over attributes beside them. ``values``: each
    attribute's values, ``starts``: its first column of ``scores``."""
    targets, scores = np.asarray(targets), np.asarray(scores, np.float64)
    per_attribute, losses = {}, []
    for i, (a, names) in enumerate(values.items()):
        known = targets[:, i] >= 0
        truth, guess = targets[known, i], predicted[known, i]
        # the baseline answers the training split's majority value (these images' own when
        # the model was not trained here)
        common = majority[i] if majority else int(np.bincount(truth, minlength=1).argmax())
        constant = np.full_like(truth, common)
        part = scores[known, starts[i]:starts[i] + len(names)]
        losses += list(-np.log(np.clip(part[np.arange(len(truth)), truth], 1e-12, 1.0)))
        per_attribute[a] = {
            "support": int(known.sum()),
            **{figure: score(figure, truth, guess) for figure in FIGURES},
            **{f"majority_{figure}": score(figure, truth, constant) for figure in FIGURES},
            "majority_value": names[common],
            "confusion_matrix": skm.confusion_matrix(
                truth, guess, labels=np.arange(len(names))).tolist()}
    scored = [m for m in per_attribute.values() if m["support"]]
    return {"num_examples": int(len(targets)),
            **{f: float(np.mean([m[f] for m in scored])) if scored else 0.0
               for f in FIGURES + tuple(f"majority_{f}" for f in FIGURES)},
            "loss": float(np.mean(losses)) if losses else 0.0,
            "per_attribute": per_attribute}


def prediction_rows(sources: Sequence[str], targets: np.ndarray, predicted: np.ndarray,
                    values: dict[str, list[str]]) -> list[dict]:
    """Per image each attribute's true value (empty when unknown) and predicted value."""
    targets = np.asarray(targets)
    rows = []
    for n, source in enumerate(sources):
        row = {"source": source}
        for i, (a, names) in enumerate(values.items()):
            row[a] = names[targets[n, i]] if targets[n, i] >= 0 else ""
            row[f"{a}_predicted"] = names[predicted[n, i]]
        rows.append(row)
    return rows


def confident_errors(targets: np.ndarray, scores: np.ndarray, predicted: np.ndarray,
                     values: dict[str, list[str]], starts: Sequence[int],
                     n: int) -> dict[str, list[tuple[int, int, str]]]:
    """Per ``attribute=true value``, the images given another value of that attribute, highest
    score first; the map is the predicted value's."""
    targets = np.asarray(targets)
    errors = {}
    for a, ((attribute, names), start) in enumerate(zip(values.items(), starts)):
        for v, value in enumerate(names):
            wrong = np.flatnonzero((targets[:, a] == v) & (predicted[:, a] != v))
            columns = start + predicted[wrong, a]
            order = np.argsort(-scores[wrong, columns], kind="stable")[:n]
            if len(order):
                errors[f"{attribute}={value}"] = [
                    (int(wrong[k]), int(columns[k]),
                     f"{value} → {names[predicted[wrong[k], a]]} "
                     f"{scores[wrong[k], columns[k]]:.2f}") for k in order]
    return errors


def write_files(figures: dict, output_dir: Path, title: str,
                values: dict[str, list[str]]) -> None:
    """``per_attribute.csv``, ``attributes.png`` (each attribute's figures beside its majority
    baseline) and one ``confusion_<attribute>.png`` per attribute."""
    from runway_cnn.plots import plot_confusion_matrix  # matplotlib only when drawing

    _write_table(figures["per_attribute"], output_dir / "per_attribute.csv")
    plot_attribute_scores(figures["per_attribute"], output_dir / "attributes.png",
                          f"{title}: mean accuracy {figures['accuracy']:.3f} (majority "
                          f"{figures['majority_accuracy']:.3f})")
    for a, m in figures["per_attribute"].items():
        if m["support"]:
            plot_confusion_matrix(np.asarray(m["confusion_matrix"]), values[a],
                                  output_dir / f"confusion_{_file_name(a)}.png",
                                  title=f"{title}: {a} (accuracy {m['accuracy']:.3f})")


def headline(figures: dict) -> str:
    return (f"accuracy {figures['accuracy']:.3f} (majority {figures['majority_accuracy']:.3f})"
            f"  macro-F1 {figures['macro_f1']:.3f} ({figures['majority_macro_f1']:.3f})  "
            f"balanced {figures['balanced_accuracy']:.3f} "
            f"({figures['majority_balanced_accuracy']:.3f})")


def format_figures(figures: dict) -> list[str]:
    """The per-attribute table, each figure beside its majority baseline's."""
    width = max([len(a) for a in figures["per_attribute"]] + [9])
    lines = [f"{'attribute':{width}s}  accuracy (majority)  macro-F1 (majority)  "
             "balanced (majority)  support"]
    for a, m in figures["per_attribute"].items():
        lines.append(f"{a:{width}s}  {m['accuracy']:8.3f} ({m['majority_accuracy']:.3f})  "
                     f"{m['macro_f1']:8.3f} ({m['majority_macro_f1']:.3f})  "
                     f"{m['balanced_accuracy']:8.3f} ({m['majority_balanced_accuracy']:.3f})"
                     f"  {m['support']:7d}")
    return lines


def combine(figures: Sequence[dict], output_dir: Path, title: str,
            attributes: Sequence[str]) -> dict:
    """Per attribute, each figure's mean ± sample std over the runs (``per_attribute.csv`` and
    ``attributes.png`` of the means)."""
    names = FIGURES + tuple(f"majority_{f}" for f in FIGURES)
    combined = {}
    for a in attributes:
        runs = [f["per_attribute"][a] for f in figures if f["per_attribute"][a]["support"]]
        combined[a] = {"support": int(sum(m["support"] for m in runs))}
        for name in names:
            found = [m[name] for m in runs]
            combined[a][name] = float(np.mean(found)) if found else 0.0
            combined[a][f"{name}_std"] = float(np.std(found, ddof=1)) if len(found) > 1 else 0.0
    _write_table(combined, output_dir / "per_attribute.csv")
    plot_attribute_scores(combined, output_dir / "attributes.png", title)
    return {"per_attribute": combined}


def score(figure: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    """scikit-learn's ``figure`` (one of ``FIGURES``) over the values that occur in ``truth``
    or ``predicted``; 0 for no cells."""
    if not len(truth):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy on a value never true here
        if figure == "accuracy":
            return float(skm.accuracy_score(truth, predicted))
        if figure == "macro_f1":
            return float(skm.f1_score(truth, predicted, average="macro", zero_division=0,
                                      labels=np.union1d(truth, predicted)))
        return float(skm.balanced_accuracy_score(truth, predicted))


def _write_table(per_attribute: dict, path: Path) -> None:
    columns = [k for k in next(iter(per_attribute.values()))
               if k not in ("confusion_matrix", "majority_value")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["attribute", *columns])
        for a, m in per_attribute.items():
            writer.writerow([a, *(m[k] for k in columns)])


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "attribute"
