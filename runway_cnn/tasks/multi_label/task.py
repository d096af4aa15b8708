"""The multi-label task: multi-hot targets, the sigmoid or ML-GCN head, its losses, the stage-1
one-vs-rest logistic regression, the per-label thresholds, export outputs and decoding (its
figures are in :mod:`runway_cnn.tasks.multi_label.evaluation`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn import metrics as skm

from runway_cnn.data.splits import multilabel_kfold_splits, multilabel_split
from runway_cnn.errors import DataError
from runway_cnn.tasks.base import Task, TaskOptions, option
from runway_cnn.tasks.heads import classification_head
from runway_cnn.tasks.logistic import OneVsRestLogistic
from runway_cnn.tasks.losses import AsymmetricLoss
from runway_cnn.tasks.mlgcn import label_adjacency, label_embeddings, mlgcn_head
from runway_cnn.tasks.multi_label import evaluation

LABELS_COLUMN = "labels"
SEPARATOR = ";"
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
HEADS = ("sigmoid", "mlgcn")
LOSSES = ("bce", "asl")


@dataclass
class MultiLabelOptions(TaskOptions):
    head: str = option("sigmoid", "multi_label head: sigmoid (dense) or mlgcn (ML-GCN)",
                       choices=HEADS)
    loss: str = option("bce", "multi_label loss: bce or asl (asymmetric loss: gamma- 4, gamma+ 0, "
                              "clip 0.05)", choices=LOSSES)
    threshold: float = option(None, "multi_label: one decision threshold for every label "
                                    "(default: per label, the best F1 on validation)")
    label_embeddings: str = option(None, "mlgcn: label word vectors, a GloVe-style text file or "
                                         "a .npy [labels, d] array (default: one-hot)", path=True)

    def __post_init__(self):
        super().__post_init__()
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise DataError(f"--threshold {self.threshold}: must be in (0, 1)")


class MultiLabelTask(Task):
    """Several labels per image: multi-hot targets, sigmoid outputs, mAP and the ML-GCN paper's
    CP / CR / CF1 / OP / OR / OF1; results are the predicted label sets with their scores."""

    name = "multi_label"
    monitor = "val_map"
    monitor_mode = "max"
    summary_figures = ("map", "cf1", "of1", "loss")
    plotted_figures = ("map", "cf1", "of1")
    csv_columns = (LABELS_COLUMN,)
    options_class = MultiLabelOptions
    evaluation = evaluation

    def __init__(self, labels: Sequence[str], dropout: float = 0.2,
                 thresholds: Sequence[float] | None = None, adjacency: Any = None,
                 embeddings: Any = None, **options):
        options = self.checked_options(options)  # head, loss, threshold, label_embeddings
        super().__init__(labels, **options, dropout=dropout,
                         thresholds=None if thresholds is None else list(thresholds),
                         adjacency=adjacency, embeddings=embeddings)
        self.head, self.loss_name, self.threshold = (options["head"], options["loss"],
                                                     options["threshold"])
        self.dropout = dropout
        self.thresholds = None if thresholds is None else np.asarray(thresholds, np.float32)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    # -- labels and targets --
    @classmethod
    def raw_label(cls, row: dict) -> tuple[str, ...]:
        if LABELS_COLUMN not in row:
            raise ValueError(f"no {LABELS_COLUMN!r} column")
        tags = [t.strip() for t in (row[LABELS_COLUMN] or "").split(SEPARATOR)]
        return tuple(dict.fromkeys(cls.label_text(t) for t in tags if t))

    @classmethod
    def label_space(cls, raw_labels: Sequence[Any], **options) -> list[str]:
        return sorted({tag for tags in raw_labels for tag in _tags(tags)})

    def unknown_labels(self, raw_labels: Sequence[Any]) -> dict[str, int]:
        known = set(self.labels)
        return dict(Counter(t for tags in raw_labels for t in _tags(tags) if t not in known))

    def unknown_summary(self, raw_labels: Sequence[Any]) -> dict:
        """As every task's, and ``images_left_without_labels``: images with tags, none of them
        known (their truth is the empty set)."""
        known = set(self.labels)
        emptied = sum(1 for tags in raw_labels
                      if _tags(tags) and not any(t in known for t in _tags(tags)))
        return {**super().unknown_summary(raw_labels), "images_left_without_labels": emptied}

    def targets(self, raw_labels: Sequence[Any], where: str) -> np.ndarray:
        """Multi-hot float32 ``[n, labels]``; tags outside the label space are left out (the
        data report counts them: :meth:`unknown_labels`)."""
        index = {name: i for i, name in enumerate(self.labels)}
        targets = np.zeros((len(raw_labels), self.num_labels), np.float32)
        for row, tags in enumerate(raw_labels):
            targets[row, [index[t] for t in _tags(tags) if t in index]] = 1.0
        return targets

    def label_counts(self, targets: np.ndarray) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.labels, np.asarray(targets).sum(axis=0))}

    def split(self, targets, validation_fraction, test_fraction, seed, groups=None):
        return multilabel_split(targets, validation_fraction, test_fraction, seed, groups)

    def kfold(self, targets, k, seed, validation_fraction, groups=None):
        return multilabel_kfold_splits(targets, k, seed, validation_fraction, groups)

    # -- model --
    def build_head(self, feature_dim: int) -> keras.Model:
        if self.head == "mlgcn":
            if self.options["adjacency"] is None:
                raise DataError("the mlgcn head needs its label graph: prepare() the task on "
                                "the training targets first")
            return mlgcn_head(feature_dim, self.options["adjacency"], self.options["embeddings"],
                              self.dropout)
        return classification_head(feature_dim, self.num_labels, self.dropout)

    def prepare(self, train_targets: np.ndarray) -> None:
        """ML-GCN's label graph from the training split's co-occurrences and its label vectors
        (kept in the config, so a restored or exported model has the same graph); the sigmoid
        head needs nothing."""
        if self.head == "mlgcn" and self.options["adjacency"] is None:
            self.options["adjacency"] = label_adjacency(train_targets).tolist()
            self.options["embeddings"] = label_embeddings(
                self.options["label_embeddings"], self.labels).tolist()

    def loss(self) -> keras.losses.Loss:
        if self.loss_name == "asl":
            return AsymmetricLoss()
        return keras.losses.BinaryCrossentropy(from_logits=True, name="bce")

    def metrics(self) -> list:
        return [keras.metrics.AUC(curve="PR", multi_label=True, num_labels=self.num_labels,
                                  from_logits=True, name="map")]

    def fit_head_convex(self, head, features, targets, val_features, val_targets):
        """One-vs-rest L2 logistic regression, one per label, the same C for all, chosen from
        ``C_GRID`` by validation mAP (ties: the stronger penalty; the path stops once validation
        mAP has fallen twice in a row, sparing the weakly regularised fits), copied into the
        head's dense layer. The labels' problems share the features, so they are solved together
        (:class:`~runway_cnn.tasks.logistic.OneVsRestLogistic`: scikit-learn's objective, a
        preconditioned Newton method warm-started along the C grid) — the same solutions as one
        scikit-learn ``LogisticRegression`` per label, many times faster. A label with one
        class only in training gets a zero weight vector and the bias of its training frequency.
        The ML-GCN head has no convex form: None (trained with Keras)."""
        if self.head != "sigmoid":
            return None
        val_targets = np.asarray(val_targets) > 0.5
        solve = self._one_vs_rest(features, targets)
        tried, best = [], None
        for c in C_GRID:
            kernel, bias = solve(c)
            scores = 1 / (1 + np.exp(-(val_features @ kernel + bias)))
            figure = evaluation.mean_ap(val_targets, scores)
            tried.append({"C": c, "val_map": figure})
            if best is None or figure > best[0]:
                best = (figure, c, kernel, bias)
            elif len(tried) >= 3 and tried[-1]["val_map"] < tried[-2]["val_map"] < \
                    tried[-3]["val_map"]:
                break
        _, c, kernel, bias = best
        head.get_layer("logits").set_weights([kernel, bias])
        return {"solver": "newton one-vs-rest", "C": c, "tried": tried}

    def refit_head_convex(self, head, features, targets, solved):
        """The same regressions with the C stage 1 chose, on these (more) images."""
        if self.head != "sigmoid":
            return None
        head.get_layer("logits").set_weights(list(self._one_vs_rest(features, targets)(
            solved["C"])))
        return {"solver": "newton one-vs-rest", "C": solved["C"]}

    def _one_vs_rest(self, features, targets):
        """C → (kernel, bias) of the one-vs-rest regressions on ``features``, warm-started from
        the previous C; a label with one class only gets a zero weight vector and the bias of
        its frequency."""
        targets = np.asarray(targets) > 0.5
        prior = np.clip(targets.mean(axis=0), 1e-4, 1 - 1e-4)
        both = (targets.sum(axis=0) > 0) & (targets.sum(axis=0) < len(targets))
        solver = OneVsRestLogistic(features, targets[:, both])

        def solve(c: float) -> tuple[np.ndarray, np.ndarray]:
            kernel = np.zeros((features.shape[1], self.num_labels), np.float32)
            bias = np.log(prior / (1 - prior)).astype(np.float32)
            kernel[:, both], bias[both] = solver.fit(c)
            return kernel, bias
        return solve

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))

    def calibrate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        """Per-label thresholds: the one with the best F1 on these (validation) images; 0.5 for
        a label without positives there; ``--threshold`` when given."""
        if self.threshold is not None:
            chosen = np.full(self.num_labels, self.threshold, np.float32)
        else:
            chosen = np.array([_best_f1_threshold(np.asarray(targets)[:, j] > 0.5, scores[:, j])
                               for j in range(self.num_labels)], np.float32)
        self.thresholds = chosen  # config() carries them
        return {"thresholds": dict(zip(self.labels, map(float, chosen)))}

    def _cutoffs(self) -> np.ndarray:
        if self.thresholds is not None:
            return self.thresholds
        return np.full(self.num_labels, self.threshold or 0.5, np.float32)

    # -- export and inference --
    def predict_outputs(self, logits, top_k):
        probabilities = tf.sigmoid(tf.cast(logits, tf.float32))
        predicted = probabilities >= tf.constant(self._cutoffs())
        k = min(top_k, self.num_labels)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "predicted": predicted,
                "classes": tf.gather(tf.constant(self.labels), indices), "scores": scores}

    def explained(self, logits):
        """The predicted set, best first; as many columns as the largest set of the batch."""
        probabilities = tf.sigmoid(tf.cast(logits, tf.float32))
        predicted = probabilities >= tf.constant(self._cutoffs())
        order = tf.argsort(tf.where(predicted, probabilities + 2.0, probabilities), axis=-1,
                           direction="DESCENDING", stable=True)
        count = tf.reduce_sum(tf.cast(predicted, tf.int32), axis=-1)
        m = tf.reduce_max(tf.concat([count, [0]], 0))
        keep = tf.range(self.num_labels)[None, :] < count[:, None]
        return tf.where(keep, order, -1)[:, :m]

    def decode(self, outputs: dict[str, np.ndarray], error: str) -> list[dict]:
        """``{"labels": [the predicted set, best first], "scores": [their probabilities]}`` per
        image; an undecodable image's ``{"labels": [], "scores": [], "error": ...}``."""
        probabilities, predicted = outputs["probabilities"], outputs["predicted"]
        valid = outputs.get("valid")
        results = []
        for i in range(len(probabilities)):
            if valid is not None and not bool(valid[i]):
                results.append({**self.empty_result(), "error": error})
                continue
            order = [j for j in np.argsort(-probabilities[i], kind="stable") if predicted[i][j]]
            results.append({"labels": [self.labels[j] for j in order],
                            "scores": [float(probabilities[i][j]) for j in order]})
        return results

    def empty_result(self) -> dict:
        return {"labels": [], "scores": []}

    def csv_header(self, top_k: int) -> list[str]:
        return ["labels", "scores"]

    def csv_cells(self, result: dict, top_k: int) -> list[str]:
        return [SEPARATOR.join(result["labels"]),
                SEPARATOR.join(f"{s:.6f}" for s in result["scores"])]

    def assets(self) -> dict[str, str]:
        lines = [f"{name}\t{t:.6f}" for name, t in zip(self.labels, self._cutoffs())]
        return {**super().assets(), "thresholds.tsv": "\n".join(lines) + "\n"}

    # -- evaluation (the figures themselves: evaluation.py) --
    def agreement(self, reference, scores):
        """Share of images with the same predicted label set."""
        cut = self._cutoffs()
        return float(np.mean(np.all((scores >= cut) == (reference >= cut), axis=1)))

    def evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        return evaluation.figures(targets, scores, self.labels, self._cutoffs())

    def predictions(self, sources, targets, scores):
        return evaluation.prediction_rows(sources, targets, scores, self.labels, self._cutoffs(),
                                          SEPARATOR)

    def confident_errors(self, targets, scores, n):
        return evaluation.confident_errors(targets, scores, self.labels, self._cutoffs(), n)

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        evaluation.write_files(figures, output_dir, title, self.labels,
                               self.options.get("adjacency"))

    def config(self) -> dict:
        return {**super().config(), "thresholds": None if self.thresholds is None
                else [float(t) for t in self.thresholds]}

    # -- display --
    def display_items(self, result: dict) -> list[dict]:
        """Each label of the result with its probability as a bar, best first."""
        return self.scored_items(result["labels"], result["scores"])

    # -- audit (no label-error questions: duplicates, outliers and the shortcut check) --
    def shortcut_columns(self, targets):
        """One 0/1 column per tag."""
        targets = np.asarray(targets)
        return [targets[:, j].astype(int) for j in range(targets.shape[1])]


def _tags(raw: Any) -> tuple[str, ...]:
    """An image's tags: a manifest's tuple, or a class folder's name as its one tag."""
    return (raw,) if isinstance(raw, str) else tuple(raw)


def _best_f1_threshold(truth: np.ndarray, scores: np.ndarray) -> float:
    """The score cut with the best F1 (midway to the next lower score, so it generalises);
    0.5 when there is no positive."""
    if not truth.any():
        return 0.5
    precision, recall, cuts = skm.precision_recall_curve(truth, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    lower = scores[scores < cuts[best]]
    return float((cuts[best] + lower.max()) / 2) if lower.size else float(cuts[best])
