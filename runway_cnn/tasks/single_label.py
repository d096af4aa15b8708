"""Single-label classification: one class per image (a look's brand, a garment's category),
softmax over the classes."""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn import metrics as skm

from runway_cnn.data.splits import kfold_splits, stratified_split
from runway_cnn.errors import DataError
from runway_cnn.tasks.base import Task, TaskOptions, option
from runway_cnn.tasks.heads import classification_head
from runway_cnn.tasks.losses import SparseSmoothedCrossentropy

LABEL_COLUMN = "label"  # a --labels_csv's class column
WORST_PAIRS = 10  # worst-confused class pairs reported by evaluation
# inverse L2 strengths stage 1 chooses from, for standardised features
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
# features are divided by their standard deviation, but by no less than this quantile of them
SCALE_FLOOR_QUANTILE = 0.5


def feature_scale(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale that standardise ``features`` for the convex head, each scale floored at
    the median feature's: a feature that barely varies on the training images would otherwise
    get a weight in proportion to ``1 / std`` and dominate the logits as soon as it moves (stage 2
    trains on smaller, augmented images: the unfloored head started it at a loss worse than
    chance and large gradients)."""
    mean, std = features.mean(axis=0), features.std(axis=0)
    varying = std[std > 0]  # constant features (std 0) must not pull the floor down to 0
    floor = float(np.quantile(varying, SCALE_FLOOR_QUANTILE)) if varying.size else 1.0
    return mean, np.maximum(std, floor)


@dataclass
class SingleLabelOptions(TaskOptions):
    label_smoothing: float = option(0.1, "single_label: label smoothing of the cross-entropy")

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.label_smoothing < 1:
            raise DataError(f"--label_smoothing {self.label_smoothing}: must be in [0, 1)")


class SingleLabelTask(Task):
    """One class per image: targets are class ids, the head a softmax classifier, the figures
    top-1 / top-5 / macro-F1, results the top-k classes with their probabilities."""

    name = "single_label"
    monitor = "val_top1"
    monitor_mode = "max"
    summary_figures = ("top1", "top5", "macro_f1", "loss")
    plotted_figures = ("top1", "top5", "macro_f1")
    csv_columns = (LABEL_COLUMN,)
    options_class = SingleLabelOptions

    def __init__(self, labels: Sequence[str], label_smoothing: float = 0.1,
                 dropout: float = 0.2):
        super().__init__(labels, label_smoothing=label_smoothing, dropout=dropout)
        self.label_smoothing, self.dropout = label_smoothing, dropout

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    # -- labels and targets --
    @classmethod
    def raw_label(cls, row: dict) -> str:
        label = (row.get(LABEL_COLUMN) or "").strip()
        if not label:
            raise ValueError(f"no {LABEL_COLUMN!r} value")
        return cls.label_text(label)

    @classmethod
    def label_space(cls, raw_labels: Sequence[Any], **options) -> list[str]:
        return sorted({str(label) for label in raw_labels})

    def unknown_labels(self, raw_labels: Sequence[Any]) -> dict[str, int]:
        known = set(self.labels)
        return dict(Counter(str(r) for r in raw_labels if str(r) not in known))

    def targets(self, raw_labels: Sequence[Any], where: str) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.labels)}
        unknown = sorted({str(r) for r in raw_labels} - set(index))
        if unknown:
            shown = ", ".join(self.labels[:20]) + (" …" if len(self.labels) > 20 else "")
            raise DataError(f"class(es) {', '.join(unknown)} of {where} are not among the "
                            f"labels ({shown})")
        return np.array([index[str(r)] for r in raw_labels], np.int32)

    def label_counts(self, targets: np.ndarray) -> dict[str, int]:
        counts = np.bincount(np.asarray(targets, int), minlength=self.num_classes)
        return {name: int(n) for name, n in zip(self.labels, counts)}

    def split(self, targets, validation_fraction, test_fraction, seed, groups=None):
        return stratified_split(targets, validation_fraction, test_fraction, seed, groups)

    def kfold(self, targets, k, seed, validation_fraction, groups=None):
        return kfold_splits(targets, k, seed, validation_fraction, groups)

    # -- model --
    def build_head(self, feature_dim: int) -> keras.Model:
        return classification_head(feature_dim, self.num_classes, self.dropout)

    def loss(self) -> keras.losses.Loss:
        return SparseSmoothedCrossentropy(self.num_classes, self.label_smoothing)

    def metrics(self) -> list:
        k = min(5, self.num_classes)
        return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5")]

    def fit_head_convex(self, head, features, targets, val_features, val_targets):
        """scikit-learn's multinomial logistic regression (L-BFGS, L2 penalty ``1 / C``) on
        standardised features (:func:`feature_scale`), C from ``C_GRID`` by validation accuracy
        (ties: the lower validation log-loss, so that equal accuracies never leave the choice to
        round-off), copied into the head's dense layer with the standardisation folded in: the
        head then computes exactly the regression's logits from raw features."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        mean, scale = feature_scale(features)
        x, val_x = (features - mean) / scale, (val_features - mean) / scale
        tried, best = [], None
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=2000).fit(x, targets)
            accuracy = float(model.score(val_x, val_targets))
            # over every class: one with no training image (probability 0) may be in validation
            probabilities = np.zeros((len(val_x), self.num_classes))
            probabilities[:, model.classes_] = model.predict_proba(val_x)
            probabilities /= probabilities.sum(axis=1, keepdims=True)  # float32 rows: exactly 1
            loss = float(log_loss(val_targets, probabilities, labels=np.arange(self.num_classes)))
            tried.append({"C": c, "val_top1": accuracy, "val_log_loss": loss})
            if best is None or (accuracy, -loss) > best[0]:
                best = ((accuracy, -loss), c, model)
        _, c, model = best
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # two classes: scikit-learn keeps only class 1's logit
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        coef = coef / scale  # w·(x - μ)/σ + b = (w/σ)·x + (b - (w/σ)·μ)
        intercept = intercept - coef @ mean
        dense = head.get_layer("logits")
        kernel = np.zeros(dense.kernel.shape, "float32")
        bias = np.zeros(dense.bias.shape, "float32")
        kernel[:, model.classes_], bias[model.classes_] = coef.T, intercept
        dense.set_weights([kernel, bias])
        return {"solver": "lbfgs", "standardized": True, "C": c, "tried": tried}

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    # -- export and inference --
    def predict_outputs(self, logits, top_k):
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        k = min(top_k, self.num_classes)
        scores, indices = tf.math.top_k(probabilities, k=k)
        classes = tf.gather(tf.constant(self.labels), indices)
        return {"probabilities": probabilities, "classes": classes, "scores": scores}

    def decode(self, outputs: dict[str, np.ndarray], error: str) -> list[dict]:
        """``{"labels": [top-k classes], "scores": [their probabilities]}`` per image, best
        first; an undecodable image's ``{"labels": [], "scores": [], "error": ...}``."""
        classes, scores = outputs["classes"], outputs["scores"]
        valid = outputs.get("valid")
        return [{**self.empty_result(), "error": error}
                if valid is not None and not bool(valid[i]) else
                {"labels": [_text(c) for c in classes[i]], "scores": [float(s) for s in scores[i]]}
                for i in range(len(classes))]

    def empty_result(self) -> dict:
        return {"labels": [], "scores": []}

    def top(self, result: dict, k: int) -> dict:
        return {**result, "labels": result["labels"][:k], "scores": result["scores"][:k]}

    def csv_header(self, top_k: int) -> list[str]:
        """``label_i, score_i`` for the top-k, k at most the number of classes."""
        k = min(top_k, self.num_classes)
        return [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("label", "score")]

    def csv_cells(self, result: dict, top_k: int) -> list[str]:
        cells = []
        for i in range(min(top_k, self.num_classes)):
            has = i < len(result["labels"])
            cells += [result["labels"][i] if has else "",
                      f"{result['scores'][i]:.6f}" if has else ""]
        return cells

    # -- evaluation --
    def evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        """scikit-learn's figures: top-1, top-5, macro-F1, loss, per-class precision / recall / F1
        / support over the classes that occur in the labels or predictions (so a model that knows
        more classes than the data holds is not diluted), the confusion matrix over all classes
        (rows: true class, in label order) and the worst-confused pairs."""
        labels, probabilities = np.asarray(targets).astype(int), scores
        names, ids = self.labels, np.arange(self.num_classes)
        predicted = probabilities.argmax(axis=-1)
        k = min(5, self.num_classes)
        present = np.union1d(labels, predicted)
        per_class = skm.precision_recall_fscore_support(labels, predicted, labels=present,
                                                        zero_division=0)
        confusion = skm.confusion_matrix(labels, predicted, labels=ids)
        totals = confusion.sum(axis=1)
        pairs = sorted(((int(confusion[i, j]), i, j) for i in ids for j in ids
                        if i != j and confusion[i, j]),
                       key=lambda t: (-t[0], -t[0] / totals[t[1]], t[1], t[2]))
        return {
            "num_examples": int(len(labels)),
            "top1": float(skm.accuracy_score(labels, predicted)),
            "top5": float(skm.top_k_accuracy_score(labels, probabilities, k=k, labels=ids))
            if k < self.num_classes else 1.0,
            "top5_k": k,
            "macro_f1": float(skm.f1_score(labels, predicted, average="macro", labels=present,
                                           zero_division=0)),
            "loss": float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels],
                                                  1e-12, 1.0)))),
            "per_class": {names[c]: {"precision": float(p), "recall": float(r), "f1": float(f),
                                     "support": int(n)}
                          for c, p, r, f, n in zip(present, *per_class)},
            "confusion_matrix": confusion.tolist(),
            "worst_confusions": [{"true": names[i], "predicted": names[j], "count": n,
                                  "share_of_true": float(n / totals[i])}
                                 for n, i, j in pairs[:WORST_PAIRS]],
        }

    def agreement(self, reference, scores):
        """Top-1 agreement."""
        return float(np.mean(scores.argmax(-1) == reference.argmax(-1)))

    def predictions(self, sources, targets, scores):
        predicted = scores.argmax(axis=1)
        return [{"source": s, "label": self.labels[t], "predicted": self.labels[p],
                 "score": float(scores[i, p])}
                for i, (s, t, p) in enumerate(zip(sources, np.asarray(targets, int), predicted))]

    def confident_errors(self, targets, scores, n):
        """Per true class, its images predicted as another class, highest predicted
        probability first; the map is the predicted class's."""
        targets, predicted = np.asarray(targets, int), scores.argmax(axis=1)
        errors = {}
        for c, name in enumerate(self.labels):
            wrong = np.flatnonzero((targets == c) & (predicted != c))
            wrong = wrong[np.argsort(-scores[wrong, predicted[wrong]], kind="stable")][:n]
            if len(wrong):
                errors[name] = [(int(i), int(predicted[i]), f"{name} → {self.labels[predicted[i]]} "
                                 f"{scores[i, predicted[i]]:.2f}") for i in wrong]
        return errors

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        """``per_class.csv``, ``confusion_matrix.csv`` and ``confusion_matrix.png`` (normalised
        per true class, the classes that occur)."""
        with (output_dir / "per_class.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "precision", "recall", "f1", "support"])
            for name, m in figures["per_class"].items():
                writer.writerow([name, m["precision"], m["recall"], m["f1"], m["support"]])
        with (output_dir / "confusion_matrix.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *self.labels])
            writer.writerows([name, *row]
                             for name, row in zip(self.labels, figures["confusion_matrix"]))
        _plot_confusion(np.asarray(figures["confusion_matrix"]), self.labels,
                        output_dir / "confusion_matrix.png",
                        f"{title}: top-1 {figures['top1']:.3f}")

    def headline(self, figures: dict) -> str:
        return (f"top1 {figures['top1']:.3f}  top{figures.get('top5_k', 5)} {figures['top5']:.3f}"
                f"  macro-F1 {figures['macro_f1']:.3f}")

    def format_figures(self, figures: dict) -> list[str]:
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

    def combine(self, figures, output_dir, title):
        """The test confusion matrices summed over an experiment's runs, and their PNG."""
        confusion = np.sum([f["confusion_matrix"] for f in figures], axis=0)
        _plot_confusion(confusion, self.labels, output_dir / "confusion_matrix.png", title)
        return {"confusion_matrix": confusion.tolist()}


def _plot_confusion(matrix: np.ndarray, labels: list[str], output: Path, title: str) -> None:
    from runway_cnn.plots import plot_confusion_matrix  # matplotlib only when drawing

    shown = np.flatnonzero(matrix.sum(axis=0) + matrix.sum(axis=1))  # classes that occur
    plot_confusion_matrix(matrix[np.ix_(shown, shown)], [labels[i] for i in shown], output,
                          title=title)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
