"""The single-label task: class ids, the softmax head, its loss, the stage-1 logistic regression,
export outputs and decoding (its figures are in :mod:`runway_cnn.tasks.single_label.evaluation`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.data.splits import kfold_splits, stratified_split
from runway_cnn.errors import DataError
from runway_cnn.tasks.base import Task, TaskOptions, option
from runway_cnn.tasks.heads import (
    classification_head,
    feature_scale,
    fold_standardisation,
)
from runway_cnn.tasks.losses import SparseSmoothedCrossentropy
from runway_cnn.tasks.single_label import evaluation

LABEL_COLUMN = "label"  # a --labels_csv's class column
# inverse L2 strengths stage 1 chooses from, for standardised features
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)


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
    labels_in_every_split = True
    summary_figures = ("top1", "top5", "macro_f1", "loss")
    plotted_figures = ("top1", "top5", "macro_f1")
    csv_columns = (LABEL_COLUMN,)
    options_class = SingleLabelOptions
    evaluation = evaluation

    def __init__(self, labels: Sequence[str], dropout: float = 0.2, **options):
        options = self.checked_options(options)  # label_smoothing
        super().__init__(labels, **options, dropout=dropout)
        self.label_smoothing, self.dropout = options["label_smoothing"], dropout

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
        self._set_head(head, model, mean, scale)
        return {"solver": "lbfgs", "standardized": True, "C": c, "tried": tried}

    def refit_head_convex(self, head, features, targets, solved):
        """The same regression with the C stage 1 chose, on these (more) images."""
        from sklearn.linear_model import LogisticRegression

        mean, scale = feature_scale(features)
        model = LogisticRegression(C=solved["C"], max_iter=2000).fit((features - mean) / scale,
                                                                     targets)
        self._set_head(head, model, mean, scale)
        return {"solver": "lbfgs", "standardized": True, "C": solved["C"]}

    @staticmethod
    def _set_head(head: keras.Model, model, mean: np.ndarray, scale: np.ndarray) -> None:
        """Copies a scikit-learn regression on ``(x - mean) / scale`` into the head's dense
        layer, the standardisation folded in; a class without training images gets zeros."""
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # two classes: scikit-learn keeps only class 1's logit
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        coef, intercept = fold_standardisation(coef, intercept, mean, scale)
        dense = head.get_layer("logits")
        kernel = np.zeros(dense.kernel.shape, "float32")
        bias = np.zeros(dense.bias.shape, "float32")
        kernel[:, model.classes_], bias[model.classes_] = coef.T, intercept
        dense.set_weights([kernel, bias])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    # -- export and inference --
    def figure_name(self, key: str) -> str:
        """``top5`` is the top-k accuracy at k = min(5, classes), named by that k (as the
        headline names it)."""
        return f"top{min(5, self.num_classes)}" if key == "top5" else key

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

    # -- evaluation (the figures themselves: evaluation.py) --
    def agreement(self, reference, scores):
        """Top-1 agreement."""
        return float(np.mean(scores.argmax(-1) == reference.argmax(-1)))

    def evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        return evaluation.figures(targets, scores, self.labels)

    def predictions(self, sources, targets, scores):
        return evaluation.prediction_rows(sources, targets, scores, self.labels)

    def confident_errors(self, targets, scores, n):
        return evaluation.confident_errors(targets, scores, self.labels, n)

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        evaluation.write_files(figures, output_dir, title, self.labels)

    def combine(self, figures, output_dir, title):
        return evaluation.combine(figures, output_dir, title, self.labels)

    # -- display --
    def display_items(self, result: dict) -> list[dict]:
        """Each label of the result with its probability as a bar, best first."""
        return self.scored_items(result["labels"], result["scores"])

    # -- audit --
    def audit_questions(self, targets):
        """One question: the class."""
        return [(None, np.asarray(targets).astype(int), list(self.labels))]


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
