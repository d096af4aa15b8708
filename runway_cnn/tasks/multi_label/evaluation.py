"""The multi-label task's figures, files and text, as the ML-GCN paper reports them: mAP (mean
over labels of scikit-learn's average precision), per-label AP, and CP, CR, CF1 (per-label
precision and recall averaged, their harmonic mean) and OP, OR, OF1 (over all image-label
pairs), at the thresholds and for the top-3 labels of each image; matplotlib is imported only to
draw."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm

from runway_cnn.tasks.mlgcn import cooccurrence
from runway_cnn.tasks.multi_label.plots import plot_label_matrix, plot_per_label_ap

TOP = 3  # the paper's top-3 figures


def figures(targets: np.ndarray, scores: np.ndarray, labels: Sequence[str],
            cutoffs: np.ndarray) -> dict:
    """The figures of ``scores`` against multi-hot ``targets``, decided at each label's
    ``cutoffs``; the labels' co-occurrence in these images; per label AP, precision, recall,
    F1, support and threshold."""
    truth = np.asarray(targets) > 0.5
    scores = np.asarray(scores, np.float64)
    at_threshold = scores >= cutoffs
    top = np.zeros_like(truth)
    rows = np.arange(len(scores))[:, None]
    top[rows, np.argsort(-scores, axis=1, kind="stable")[:, :min(TOP, len(labels))]] = True
    ap = per_label_ap(truth, scores)
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return {
        "num_examples": int(len(truth)),
        "map": float(np.mean([v for v in ap if v is not None])) if any(
            v is not None for v in ap) else 0.0,
        **_paper_figures(truth, at_threshold),
        **{f"{k}_top{TOP}": v for k, v in _paper_figures(truth, top).items()},
        "loss": float(-np.mean(truth * np.log(p) + (~truth) * np.log(1 - p))),
        "cooccurrence": cooccurrence(truth).tolist(),
        "per_label": {name: {"ap": a, "support": int(truth[:, j].sum()),
                             "threshold": float(cutoffs[j]),
                             **_label_prf(truth[:, j], at_threshold[:, j])}
                      for j, (name, a) in enumerate(zip(labels, ap))},
    }


def prediction_rows(sources: Sequence[str], targets: np.ndarray, scores: np.ndarray,
                    labels: Sequence[str], cutoffs: np.ndarray, separator: str) -> list[dict]:
    """Per image its true and predicted label sets and every label's score, each joined by
    ``separator``."""
    truth, at_threshold = np.asarray(targets) > 0.5, np.asarray(scores) >= cutoffs
    return [{"source": s,
             "labels": separator.join(n for n, t in zip(labels, truth[i]) if t),
             "predicted": separator.join(n for n, t in zip(labels, at_threshold[i]) if t),
             "scores": separator.join(f"{v:.4f}" for v in scores[i])}
            for i, s in enumerate(sources)]


def confident_errors(targets: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                     cutoffs: np.ndarray, n: int) -> dict[str, list[tuple[int, int, str]]]:
    """Per label, its false positives (predicted, not true), highest score first; the map is
    that label's."""
    truth, predicted = np.asarray(targets) > 0.5, scores >= cutoffs
    errors = {}
    for j, name in enumerate(labels):
        wrong = np.flatnonzero(predicted[:, j] & ~truth[:, j])
        wrong = wrong[np.argsort(-scores[wrong, j], kind="stable")][:n]
        if len(wrong):
            errors[name] = [(int(i), j, f"not {name}, scored {scores[i, j]:.2f}")
                            for i in wrong]
    return errors


def write_files(figures: dict, output_dir: Path, title: str, labels: Sequence[str],
                adjacency: Any = None) -> None:
    """``per_label.csv`` (AP, precision, recall, F1, support, threshold), ``per_label_ap.png``,
    the labels' co-occurrence in these images as ``label_cooccurrence.png`` (P(column | row))
    and, given ML-GCN's ``adjacency``, its label graph as ``label_graph.png``."""
    with (output_dir / "per_label.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "ap", "precision", "recall", "f1", "support", "threshold"])
        for name, m in figures["per_label"].items():
            writer.writerow([name, m["ap"], m["precision"], m["recall"], m["f1"],
                             m["support"], m["threshold"]])
    plot_per_label_ap({n: m["ap"] for n, m in figures["per_label"].items()},
                      output_dir / "per_label_ap.png", f"{title}: mAP {figures['map']:.3f}")
    plot_label_matrix(np.asarray(figures["cooccurrence"]), labels,
                      output_dir / "label_cooccurrence.png", f"{title}: label co-occurrence")
    if adjacency is not None:
        plot_label_matrix(np.asarray(adjacency), labels, output_dir / "label_graph.png",
                          "ML-GCN label graph (Â)", colorbar="weight")


def headline(figures: dict) -> str:
    return f"mAP {figures['map']:.3f}  CF1 {figures['cf1']:.3f}  OF1 {figures['of1']:.3f}"


def format_figures(figures: dict) -> list[str]:
    """The top-3 figures and the per-label table."""
    width = max([len(n) for n in figures["per_label"]] + [5])
    lines = [f"top-{TOP}: CP {figures[f'cp_top{TOP}']:.3f}  CR {figures[f'cr_top{TOP}']:.3f}"
             f"  CF1 {figures[f'cf1_top{TOP}']:.3f}  OP {figures[f'op_top{TOP}']:.3f}  OR "
             f"{figures[f'or_top{TOP}']:.3f}  OF1 {figures[f'of1_top{TOP}']:.3f}", "",
             f"{'label':{width}s}     AP  precision  recall     f1  support"]
    for name, m in figures["per_label"].items():
        ap = "    -" if m["ap"] is None else f"{m['ap']:.3f}"
        lines.append(f"{name:{width}s}  {ap:>5s}  {m['precision']:9.3f}  {m['recall']:6.3f}  "
                     f"{m['f1']:5.3f}  {m['support']:7d}")
    return lines


def per_label_ap(truth: np.ndarray, scores: np.ndarray) -> list[float | None]:
    """scikit-learn's average precision per label; None for a label without positives."""
    return [float(skm.average_precision_score(truth[:, j], scores[:, j]))
            if truth[:, j].any() else None for j in range(truth.shape[1])]


def mean_ap(truth: np.ndarray, scores: np.ndarray) -> float:
    """The mean of :func:`per_label_ap` over the labels with positives; 0 when none has."""
    values = [v for v in per_label_ap(truth, scores) if v is not None]
    return float(np.mean(values)) if values else 0.0


def _paper_figures(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """CP, CR, CF1 (per-label precision and recall, averaged over labels; CF1 their harmonic
    mean) and OP, OR, OF1 (over all image-label pairs), as ML-GCN reports them. A label never
    predicted has precision 0."""
    tp = (truth & predicted).sum(axis=0).astype(np.float64)
    n_predicted, n_true = predicted.sum(axis=0), truth.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cp = float(np.mean(np.where(n_predicted > 0, tp / np.maximum(n_predicted, 1), 0.0)))
        cr = float(np.mean(np.where(n_true > 0, tp / np.maximum(n_true, 1), 0.0)))
    op = float(tp.sum() / max(n_predicted.sum(), 1))
    or_ = float(tp.sum() / max(n_true.sum(), 1))
    return {"cp": cp, "cr": cr, "cf1": _harmonic(cp, cr), "op": op, "or": or_,
            "of1": _harmonic(op, or_)}


def _label_prf(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    p, r, f, _ = skm.precision_recall_fscore_support(truth, predicted, average="binary",
                                                     zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0
