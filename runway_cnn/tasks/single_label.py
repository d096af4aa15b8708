"""Tasks: a head + loss + metrics + evaluation + export outputs behind one interface.

The trainer only talks to a :class:`Task`; single-label classification is the first entry of the
``TASKS`` registry, and multi-label (ML-GCN) and multi-attribute heads are meant to join it.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn import metrics as skm

from runway_cnn.registry import Registry
from runway_cnn.tasks.heads import classification_head

WORST_PAIRS = 10  # worst-confused class pairs reported by evaluation
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # inverse L2 strengths stage 1 chooses from


class Task:
    """What a trainer needs to know about a prediction problem.

    ``monitor`` names the validation metric (Keras log key) used to pick the best weights.
    """

    name = "task"
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)

    def build_head(self, feature_dim: int) -> keras.Model:
        raise NotImplementedError

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def metrics(self) -> list:
        raise NotImplementedError

    def predict_outputs(self, logits: tf.Tensor, top_k: int) -> dict[str, tf.Tensor]:
        """Graph-side outputs of the exported serving signature."""
        raise NotImplementedError

    def evaluate(self, labels: np.ndarray, probabilities: np.ndarray) -> dict:
        """Figures for ``metrics.json`` (plain JSON types), from labels and predicted scores."""
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit_head_convex(self, head: keras.Model, features: np.ndarray, labels: np.ndarray,
                        val_features: np.ndarray, val_labels: np.ndarray) -> dict | None:
        """Solves the head on fixed features as a convex problem, regularisation chosen on
        validation, writing the solution into ``head``; returns what was tried and chosen, or
        None where the task has no such solver (the trainer then trains the head with Keras)."""
        return None

    def config(self) -> dict:
        return {"task": self.name, "class_names": self.class_names}


@keras.saving.register_keras_serializable(package="runway_cnn")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy on integer labels with optional label smoothing."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, name="crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.label_smoothing = int(num_classes), float(label_smoothing)

    def call(self, y_true, y_pred):
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32"),
                                    self.num_classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "label_smoothing": self.label_smoothing}


class SingleLabelTask(Task):
    """One class per image (a look's brand, a garment's category): softmax over the classes."""

    name = "single_label"
    monitor = "val_top1"
    monitor_mode = "max"

    def __init__(self, class_names: Sequence[str], label_smoothing: float = 0.1,
                 dropout: float = 0.2):
        super().__init__(class_names)
        self.label_smoothing, self.dropout = label_smoothing, dropout

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_head(self, feature_dim: int) -> keras.Model:
        return classification_head(feature_dim, self.num_classes, self.dropout)

    def loss(self) -> keras.losses.Loss:
        return SparseSmoothedCrossentropy(self.num_classes, self.label_smoothing)

    def metrics(self) -> list:
        k = min(5, self.num_classes)
        return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5")]

    def predict_outputs(self, logits, top_k):
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        k = min(top_k, self.num_classes)
        scores, indices = tf.math.top_k(probabilities, k=k)
        classes = tf.gather(tf.constant(self.class_names), indices)
        return {"probabilities": probabilities, "classes": classes, "scores": scores}

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def fit_head_convex(self, head, features, labels, val_features, val_labels):
        """scikit-learn's multinomial logistic regression (L-BFGS, L2 penalty ``1 / C``), C from
        ``C_GRID`` by validation accuracy (ties: the stronger penalty), copied into the head's
        dense layer: the head then computes exactly the regression's logits."""
        from sklearn.linear_model import LogisticRegression

        dense = head.get_layer("logits")
        tried, best = [], None
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=2000).fit(features, labels)
            accuracy = float(model.score(val_features, val_labels))
            tried.append({"C": c, "val_top1": accuracy})
            if best is None or accuracy > best[0]:
                best = (accuracy, c, model)
        _, c, model = best
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # two classes: scikit-learn keeps only class 1's logit
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        kernel = np.zeros(dense.kernel.shape, "float32")
        bias = np.zeros(dense.bias.shape, "float32")
        kernel[:, model.classes_], bias[model.classes_] = coef.T, intercept
        dense.set_weights([kernel, bias])
        return {"solver": "lbfgs", "C": c, "tried": tried}

    def evaluate(self, labels: np.ndarray, probabilities: np.ndarray) -> dict:
        """scikit-learn's figures: top-1, top-5, macro-F1, loss, per-class precision / recall / F1
        / support over the classes that occur in the labels or predictions (so a model that knows
        more classes than the data holds is not diluted), the confusion matrix over all classes
        (rows: true class, in ``class_names`` order) and the worst-confused pairs."""
        labels = np.asarray(labels).astype(int)
        names, ids = self.class_names, np.arange(self.num_classes)
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

    def config(self) -> dict:
        return {**super().config(), "label_smoothing": self.label_smoothing,
                "dropout": self.dropout}


TASKS: Registry[type[Task]] = Registry("task")
TASKS.register("single_label", SingleLabelTask)


def get_task(name: str, class_names: Sequence[str], **options) -> Task:
    return TASKS.get(name)(class_names, **options)
