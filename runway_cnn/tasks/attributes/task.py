"""The attributes task: value ids per attribute, the head of side-by-side softmaxes, its masked
loss and accuracy, balancing, the stage-1 softmax regression per attribute, export outputs and
decoding (its figures are in :mod:`runway_cnn.tasks.attributes.evaluation`)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.data.splits import multilabel_kfold_splits, multilabel_split
from runway_cnn.errors import DataError
from runway_cnn.tasks.attributes import evaluation
from runway_cnn.tasks.base import Task, TaskOptions, option
from runway_cnn.tasks.heads import classification_head
from runway_cnn.tasks.logistic import SoftmaxPerAttribute
from runway_cnn.tasks.losses import MaskedAttributeCrossentropy

FILENAME_COLUMN = "filename"
OTHER = "other"
RARE = ("merge", "drop")
BALANCE = ("none", "oversample", "class_weight")
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass
class AttributeOptions(TaskOptions):
    attributes: str = option(None, "attributes: the --labels_csv columns to learn, "
                                   "comma-separated (default: every column but filename)")
    min_count: int = option(5, "attributes: values with fewer images in the CSV are rare "
                               "(--rare)")
    rare: str = option("merge", "attributes: rare values merged into 'other' (merge) or made "
                                "unknown cells (drop)", choices=RARE)
    balance: str = option("none", "attributes: none; oversample (repeat-factor sampling of "
                                  "images with rare values, as per-image weights); or "
                                  "class_weight (each known cell weighted by its value's "
                                  "balanced weight)", choices=BALANCE)
    attribute_weights: str = option(None, "attributes: loss weight per attribute, e.g. "
                                          "'neckline=2,pattern=0.5' (others 1)")


class AttributeTask(Task):
    """One softmax per attribute; targets ``[n, attributes]`` value ids, -1 where unknown;
    results ``{"attributes": {name: {"value": …, "score": …}}}``."""

    name = "attributes"
    monitor = "val_accuracy"
    monitor_mode = "max"
    summary_figures = ("accuracy", "macro_f1", "balanced_accuracy", "majority_accuracy",
                       "majority_macro_f1", "majority_balanced_accuracy", "loss")
    plotted_figures = ("accuracy", "macro_f1", "balanced_accuracy", "majority_accuracy")
    options_class = AttributeOptions
    evaluation = evaluation

    def __init__(self, labels: Sequence[str], dropout: float = 0.2,
                 majority: Sequence[int] | None = None,
                 value_weights: Sequence[float] | None = None, **options):
        # ``attributes`` and ``min_count`` are options of the label space (label_space), which
        # ``labels`` already are: the task is built from all of its options and keeps the labels
        options = self.checked_options(options)
        rare, balance = options["rare"], options["balance"]
        self.attributes = list(dict.fromkeys(_split_label(label)[0] for label in labels))
        self.values = {a: [] for a in self.attributes}
        for label in labels:
            attribute, value = _split_label(label)
            self.values[attribute].append(value)
        ordered = [f"{a}={v}" for a in self.attributes for v in self.values[a]]
        super().__init__(ordered, rare=rare, balance=balance,
                         attribute_weights=_parse_weights(options["attribute_weights"],
                                                          self.attributes),
                         dropout=dropout, majority=None if majority is None else list(majority),
                         value_weights=None if value_weights is None else list(value_weights))
        self.rare, self.balance, self.dropout = rare, balance, dropout
        self.sizes = [len(self.values[a]) for a in self.attributes]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)

    # -- labels and targets --
    @classmethod
    def raw_label(cls, row: dict) -> dict[str, str | None]:
        """Every column but ``filename``: its stripped cell, None when empty (unknown)."""
        cells = {cls.label_text(k, "column"): (v or "").strip() or None for k, v in row.items()
                 if k is not None and k != FILENAME_COLUMN}
        for column, value in cells.items():
            if value is not None:
                cls.label_text(value, f"{column} value")
        return cells

    @classmethod
    def label_space(cls, raw_labels: Sequence[dict], attributes: str | None = None,
                    min_count: int = 5, rare: str = "merge", **options) -> list[str]:
        """``attribute=value`` names of the chosen attributes (default: every column but
        ``filename``), values with fewer than ``min_count`` images merged into ``other`` or
        dropped."""
        columns = list(raw_labels[0]) if raw_labels else []
        chosen = ([a.strip() for a in attributes.split(",") if a.strip()]
                  if isinstance(attributes, str) else list(attributes or columns))
        missing = [a for a in chosen if a not in columns]
        if missing or not chosen:
            raise DataError(f"--attributes {','.join(missing) or '(none)'}: not a column of the "
                            f"labels CSV (its attribute columns: {', '.join(columns) or 'none'})")
        bad = [a for a in chosen if "=" in a]
        if bad:
            raise DataError(f"attribute column {bad[0]!r}: names may not contain '='")
        labels = []
        for attribute in chosen:
            counts = Counter(r[attribute] for r in raw_labels if r[attribute] is not None)
            common = sorted(v for v, n in counts.items() if n >= min_count)
            if rare == "merge" and len(common) < len(counts) and OTHER not in common:
                common.append(OTHER)
            if len(common) < 2:
                raise DataError(
                    f"attribute {attribute!r} has {len(common)} value(s) with at least "
                    f"{min_count} images ({dict(counts.most_common(5))}); lower --min_count or "
                    "leave it out with --attributes")
            labels += [f"{attribute}={v}" for v in common]
        return labels

    def _value_id(self, attribute: str, value: str | None) -> int:
        values = self.values[attribute]
        if value is None:
            return -1
        if value in values:
            return values.index(value)
        return values.index(OTHER) if self.rare == "merge" and OTHER in values else -1

    def targets(self, raw_labels: Sequence[dict], where: str) -> np.ndarray:
        """Value ids ``[n, attributes]`` int32; unknown cells, and values outside the label
        space that are not merged into ``other``, are -1."""
        missing = [a for a in self.attributes if raw_labels and a not in raw_labels[0]]
        if missing:
            raise DataError(f"{where}: no column {missing[0]!r} (the model's attributes: "
                            f"{', '.join(self.attributes)})")
        return np.array([[self._value_id(a, r.get(a)) for a in self.attributes]
                         for r in raw_labels], np.int32).reshape(len(raw_labels),
                                                                  len(self.attributes))

    def unknown_labels(self, raw_labels: Sequence[dict]) -> dict[str, int]:
        """Values outside the label space and what became of them (merged into ``other``, or
        dropped: an unknown cell), with their image counts."""
        out = Counter()
        for r in raw_labels:
            for a in self.attributes:
                value = r.get(a)
                if value is not None and value not in self.values[a]:
                    fate = OTHER if self._value_id(a, value) >= 0 else "unknown (dropped)"
                    out[f"{a}={value} → {fate}"] += 1
        return dict(sorted(out.items()))

    def label_counts(self, targets: np.ndarray) -> dict[str, int]:
        targets = np.asarray(targets)
        return {f"{a}={v}": int((targets[:, i] == j).sum())
                for i, a in enumerate(self.attributes) for j, v in enumerate(self.values[a])}

    def _one_hot(self, targets: np.ndarray) -> np.ndarray:
        targets = np.asarray(targets)
        out = np.zeros((len(targets), len(self.labels)), np.int8)
        rows, columns = np.nonzero(targets >= 0)
        out[rows, self.starts[columns] + targets[rows, columns]] = 1
        return out

    def split(self, targets, validation_fraction, test_fraction, seed, groups=None):
        return multilabel_split(self._one_hot(targets), validation_fraction, test_fraction, seed,
                                groups)

    def kfold(self, targets, k, seed, validation_fraction, groups=None):
        return multilabel_kfold_splits(self._one_hot(targets), k, seed, validation_fraction,
                                       groups)

    # -- model --
    def prepare(self, train_targets: np.ndarray) -> None:
        """The training split's majority value per attribute (the baseline) and its balanced
        value weights (``n_known / (values · count)``, scikit-learn's "balanced")."""
        counts = self._one_hot(train_targets).sum(axis=0).astype(np.float64)
        majority, weights = [], []
        for start, size in zip(self.starts, self.sizes):
            part = counts[start:start + size]
            majority.append(int(part.argmax()))
            weights += list(np.where(part > 0, part.sum() / (size * np.maximum(part, 1)), 0.0))
        self.options["majority"], self.options["value_weights"] = majority, weights

    def build_head(self, feature_dim: int) -> keras.Model:
        """Dropout + one dense layer holding every attribute's logits side by side (one softmax
        per attribute's columns)."""
        return classification_head(feature_dim, len(self.labels), self.dropout)

    def _attribute_weights(self) -> list[float]:
        weights = self.options["attribute_weights"] or {}
        return [float(weights.get(a, 1.0)) for a in self.attributes]

    def loss(self) -> keras.losses.Loss:
        value_weights = (self.options["value_weights"] if self.balance == "class_weight"
                         else None)
        return MaskedAttributeCrossentropy(self.sizes, self._attribute_weights(), value_weights)

    def metrics(self) -> list:
        return [MaskedAttributeAccuracy(self.sizes, name="accuracy")]

    def sample_weights(self, targets: np.ndarray) -> np.ndarray | None:
        """``--balance oversample``: each image's repeat factor max(1, √(t / f)) over its known
        attributes (f its value's share among the images where the attribute is known,
        t = 1 / values), normalised to mean 1; otherwise None."""
        if self.balance != "oversample":
            return None
        targets = np.asarray(targets)
        factors = np.ones(len(targets))
        for i, size in enumerate(self.sizes):
            known = targets[:, i] >= 0
            if not known.any():
                continue
            share = np.bincount(targets[known, i], minlength=size) / known.sum()
            repeat = np.maximum(1.0, np.sqrt((1.0 / size) / np.maximum(share, 1e-12)))
            factors[known] = np.maximum(factors[known], repeat[targets[known, i]])
        return (factors / factors.mean()).astype(np.float32)

    def _cell_weights(self, targets: np.ndarray) -> np.ndarray | None:
        """Per-cell weights of the stage-1 regression: the balance's, as the Keras loss has."""
        targets = np.asarray(targets)
        if self.balance == "oversample":
            return np.repeat(self.sample_weights(targets)[:, None], len(self.attributes), axis=1)
        if self.balance == "class_weight":
            weights = np.asarray(self.options["value_weights"])
            return weights[self.starts + np.maximum(targets, 0)]
        return None

    def fit_head_convex(self, head, features, targets, val_features, val_targets):
        """One multinomial L2 logistic regression per attribute on its known rows, solved
        together along ``C_GRID``; each attribute keeps the C with the best validation accuracy
        (balanced accuracy under ``--balance``; ties: the stronger penalty). An attribute leaves
        the path once it has gained nothing for two values of C, sparing most of the slow,
        weakly regularised fits. Per-attribute loss weights do not enter: for independent
        problems they only rescale C, which validation chooses anyway."""
        targets, val_targets = np.asarray(targets), np.asarray(val_targets)
        solver = SoftmaxPerAttribute(features, targets, self.sizes, self._cell_weights(targets))
        positions = list(range(len(self.attributes)))  # the solver's attributes
        kernel = np.zeros((features.shape[1], len(self.labels)), np.float32)
        bias = np.zeros(len(self.labels), np.float32)
        figure = "balanced_accuracy" if self.balance != "none" else "accuracy"
        best = [-1.0] * len(self.attributes)
        chosen, tried, gained = {}, [], [0] * len(self.attributes)
        active = list(range(len(self.attributes)))
        for step, c in enumerate(C_GRID):
            # an attribute that gained nothing for two values of C leaves the path
            active = [i for i in active if step - gained[i] <= 2]
            if not active:
                break
            if len(active) < solver.targets.shape[1]:
                solver = solver.subset([positions.index(i) for i in active])
                positions = active
            k, b = solver.fit(c)
            scores, start = {}, 0
            for i in active:
                a, columns = self.attributes[i], slice(start, start + self.sizes[i])
                known = val_targets[:, i] >= 0
                guess = (val_features @ k[:, columns] + b[columns]).argmax(axis=1)
                scores[a] = evaluation.score(figure, val_targets[known, i], guess[known])
                if scores[a] > best[i]:
                    target = slice(self.starts[i], self.starts[i] + self.sizes[i])
                    kernel[:, target], bias[target] = k[:, columns], b[columns]
                    best[i], chosen[a], gained[i] = scores[a], c, step
                start += self.sizes[i]
            tried.append({"C": c, f"val_{figure}": scores})
        head.get_layer("logits").set_weights([kernel, bias])
        return {"solver": "newton softmax per attribute", "C": chosen, "tried": tried}

    def refit_head_convex(self, head, features, targets, solved):
        """The same regressions with each attribute's chosen C, on these (more) images: one
        solve per distinct C, over the attributes that chose it, in increasing C."""
        targets = np.asarray(targets)
        solver = SoftmaxPerAttribute(features, targets, self.sizes, self._cell_weights(targets))
        kernel = np.zeros((features.shape[1], len(self.labels)), np.float32)
        bias = np.zeros(len(self.labels), np.float32)
        for c in sorted(set(solved["C"].values())):
            positions = [i for i, a in enumerate(self.attributes) if solved["C"].get(a) == c]
            k, b = solver.subset(positions).fit(c)
            start = 0
            for i in positions:
                target, size = slice(self.starts[i], self.starts[i] + self.sizes[i]), self.sizes[i]
                kernel[:, target], bias[target] = k[:, start:start + size], b[start:start + size]
                start += size
        head.get_layer("logits").set_weights([kernel, bias])
        return {"solver": "newton softmax per attribute", "C": dict(solved["C"])}

    def _segments(self, logits):
        return [logits[:, s:s + n] for s, n in zip(self.starts, self.sizes)]

    def _argmax(self, logits: np.ndarray) -> np.ndarray:
        return np.stack([part.argmax(axis=1) for part in self._segments(logits)], axis=1)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Each attribute's softmax, side by side ``[n, labels]``."""
        parts = []
        for part in self._segments(np.asarray(logits, np.float64)):
            e = np.exp(part - part.max(axis=1, keepdims=True))
            parts.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(parts, axis=1)

    # -- export and inference --
    def predict_outputs(self, logits, top_k):
        """``probabilities`` ``[b, labels]`` (each attribute's softmax), and per attribute (in
        ``attributes`` order) the top ``values`` ``[b, attributes]`` and their ``scores``."""
        logits = tf.cast(logits, tf.float32)
        parts = [tf.nn.softmax(logits[:, s:s + n], axis=-1)
                 for s, n in zip(self.starts, self.sizes)]
        values = [tf.gather(tf.constant(self.values[a]), tf.argmax(p, axis=-1))
                  for a, p in zip(self.attributes, parts)]
        return {"probabilities": tf.concat(parts, axis=-1), "values": tf.stack(values, axis=-1),
                "scores": tf.stack([tf.reduce_max(p, axis=-1) for p in parts], axis=-1)}

    def explained(self, logits):
        """Each attribute's top value, in ``attributes`` order."""
        return tf.stack([s + tf.argmax(logits[:, s:s + n], axis=-1, output_type=tf.int32)
                         for s, n in zip(self.starts.tolist(), self.sizes)], axis=-1)

    def decode(self, outputs: dict[str, np.ndarray], error: str) -> list[dict]:
        valid = outputs.get("valid")
        results = []
        for i in range(len(outputs["values"])):
            if valid is not None and not bool(valid[i]):
                results.append({**self.empty_result(), "error": error})
                continue
            results.append({"attributes": {
                a: {"value": _text(outputs["values"][i][j]),
                    "score": float(outputs["scores"][i][j])}
                for j, a in enumerate(self.attributes)}})
        return results

    def empty_result(self) -> dict:
        return {"attributes": {}}

    def label_groups(self) -> dict[str, list[int]]:
        """Each attribute's columns."""
        return {a: list(range(s, s + n)) for a, s, n in zip(self.attributes, self.starts,
                                                            self.sizes)}

    def describe(self, result: dict, limit: int = 3, groups: Sequence[str] | None = None) -> str:
        """``attribute: value`` of the first ``limit`` attributes (of ``groups`` when given)."""
        shown = [(a, v) for a, v in result.get("attributes", {}).items()
                 if groups is None or a in groups]
        return ", ".join(f"{a}: {v['value']}" for a, v in shown[:limit])

    def csv_header(self, top_k: int) -> list[str]:
        """One column per attribute: its top value."""
        return list(self.attributes)

    def csv_cells(self, result: dict, top_k: int) -> list[str]:
        return [result["attributes"][a]["value"] if a in result["attributes"] else ""
                for a in self.attributes]

    def assets(self) -> dict[str, str]:
        return {**super().assets(), "attributes.txt": "\n".join(self.attributes) + "\n"}

    # -- evaluation (the figures themselves: evaluation.py) --
    def agreement(self, reference, scores):
        """Share of image-attribute cells with the same top value."""
        return float(np.mean(self._argmax(scores) == self._argmax(reference)))

    def evaluate(self, targets: np.ndarray, scores: np.ndarray) -> dict:
        return evaluation.figures(targets, scores, self._argmax(np.asarray(scores)), self.values,
                                  self.starts, self.options["majority"])

    def predictions(self, sources, targets, scores):
        return evaluation.prediction_rows(sources, targets, self._argmax(np.asarray(scores)),
                                          self.values)

    def confident_errors(self, targets, scores, n):
        return evaluation.confident_errors(targets, scores, self._argmax(np.asarray(scores)),
                                           self.values, self.starts, n)

    def write_evaluation(self, figures: dict, output_dir: Path, title: str) -> None:
        evaluation.write_files(figures, output_dir, title, self.values)

    def combine(self, figures, output_dir, title):
        return evaluation.combine(figures, output_dir, title, self.attributes)

    # -- display --
    def display_items(self, result: dict) -> list[dict]:
        """``attribute: value`` with a bar of the value's probability, per attribute."""
        return [{"text": f"{a}: {v['value']}", "score": v["score"]}
                for a, v in result.get("attributes", {}).items()]

    # -- audit --
    def audit_questions(self, targets):
        """One question per attribute: its value ids."""
        targets = np.asarray(targets)
        return [(a, targets[:, i].astype(int), list(self.values[a]))
                for i, a in enumerate(self.attributes)]

    def manifest_columns(self):
        """One column per attribute."""
        return list(self.attributes)


class MaskedAttributeAccuracy(keras.metrics.Mean):
    """Share of known cells (target ≥ 0) whose attribute's top logit is the target value."""

    def __init__(self, sizes: Sequence[int], name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sizes = list(sizes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        start, hits, known = 0, [], []
        for i, size in enumerate(self.sizes):
            guess = tf.argmax(y_pred[:, start:start + size], axis=-1, output_type=tf.int32)
            hits.append(tf.cast(tf.equal(guess, y_true[:, i]), tf.float32))
            known.append(tf.cast(y_true[:, i] >= 0, tf.float32))
            start += size
        hits, known = tf.stack(hits, axis=1), tf.stack(known, axis=1)
        return super().update_state(tf.reshape(hits, [-1]), tf.reshape(known, [-1]))

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes}


def _split_label(label: str) -> tuple[str, str]:
    attribute, sep, value = label.partition("=")
    if not sep or not attribute or not value:
        raise DataError(f"attribute label {label!r}: expected attribute=value (the attributes "
                        "task reads --labels_csv, one column per attribute)")
    return attribute, value


def _parse_weights(weights: str | dict | None, attributes: list[str]) -> dict[str, float] | None:
    """``--attribute_weights neckline=2,pattern=0.5`` → {name: weight}; unnamed ones weigh 1."""
    if not weights:
        return None
    if isinstance(weights, dict):
        pairs = list(weights.items())
    else:
        pairs = []
        for item in weights.split(","):
            name, _, value = item.partition("=")
            pairs.append((name.strip(), value.strip()))
    out = {}
    for name, value in pairs:
        try:
            out[name] = float(value)
        except ValueError:
            raise DataError(f"--attribute_weights {name}={value}: not a number") from None
        if name not in attributes or not 0 <= out[name] < float("inf"):
            raise DataError(f"--attribute_weights {name}={value}: "
                            + ("weights must be finite numbers ≥ 0" if name in attributes else
                               f"no such attribute (the attributes: {', '.join(attributes)})"))
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
