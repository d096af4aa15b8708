"""Two attributes over one backbone (two softmaxes in one dense layer), unknown cells masked out
of the loss; labels ``attribute=value``, targets ``[n, 2]`` value ids with -1 unknown. It
implements 11 methods; splits, head, metrics, export assets, the audit, the web page's display
and the evaluation's files are the contract's defaults."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from runway_cnn.tasks import Task

ATTRIBUTES = {"pattern": ("checks", "disc", "hstripes", "vstripes"), "tone": ("light", "dark")}


class MaskedAttributeLoss(keras.losses.Loss):
    """Sum over attributes of the softmax cross-entropy of the known cells (-1: unknown)."""

    def __init__(self, sizes, name="masked_attributes", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sizes = list(sizes)

    def call(self, y_true, y_pred):
        total, start = 0.0, 0
        for a, size in enumerate(self.sizes):
            target = tf.cast(y_true[:, a], tf.int32)
            known = tf.cast(target >= 0, tf.float32)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.maximum(target, 0), y_pred[:, start:start + size])
            total += ce * known
            start += size
        return total


class ToyAttributeTask(Task):
    """Two attributes, labels ``attribute=value``; targets ``[n, 2]`` value ids, -1 unknown."""

    name = "toy_attributes"
    summary_figures = ("accuracy", "loss")
    csv_columns = tuple(ATTRIBUTES)  # what raw_label reads: the cleaned manifest's columns

    def __init__(self, labels, dropout=0.2):
        super().__init__(labels, dropout=dropout)
        self.attributes = list(dict.fromkeys(label.split("=")[0] for label in labels))
        self.values = {a: [label.split("=", 1)[1] for label in labels
                           if label.startswith(a + "=")] for a in self.attributes}

    @classmethod
    def raw_label(cls, row):
        return {a: (row.get(a) or "").strip() or None for a in ATTRIBUTES}

    @classmethod
    def label_space(cls, raw_labels):
        return [f"{a}={v}" for a in ATTRIBUTES
                for v in sorted({r[a] for r in raw_labels if r[a]})]

    def targets(self, raw_labels, where):
        return np.array([[self.values[a].index(r[a]) if r[a] else -1 for a in self.attributes]
                         for r in raw_labels], np.int32)

    def loss(self):
        return MaskedAttributeLoss([len(self.values[a]) for a in self.attributes])

    def _softmaxes(self, logits):
        start, parts = 0, []
        for a in self.attributes:
            size = len(self.values[a])
            parts.append(tf.nn.softmax(logits[:, start:start + size]))
            start += size
        return parts

    def probabilities(self, logits):
        return np.concatenate([p.numpy() for p in self._softmaxes(tf.constant(logits))], axis=1)

    def predict_outputs(self, logits, top_k):
        parts = self._softmaxes(tf.cast(logits, tf.float32))
        out = {"probabilities": tf.concat(parts, axis=1)}
        for a, p in zip(self.attributes, parts):
            out[f"{a}_value"] = tf.gather(tf.constant(self.values[a]), tf.argmax(p, axis=1))
            out[f"{a}_score"] = tf.reduce_max(p, axis=1)
        return out

    def decode(self, outputs, error):
        valid = outputs.get("valid")
        results = []
        for i in range(len(outputs["probabilities"])):
            if valid is not None and not valid[i]:
                results.append({"error": error})
                continue
            results.append({a: {"value": _text(outputs[f"{a}_value"][i]),
                                "score": float(outputs[f"{a}_score"][i])}
                            for a in self.attributes})
        return results

    def csv_header(self, top_k):
        return list(self.attributes)

    def csv_cells(self, result, top_k):
        return [result[a]["value"] if a in result else "" for a in self.attributes]

    def evaluate(self, targets, scores):
        start, correct, known = 0, 0, 0
        for i, a in enumerate(self.attributes):
            size = len(self.values[a])
            mask = targets[:, i] >= 0
            correct += int((scores[mask, start:start + size].argmax(1) == targets[mask, i]).sum())
            known += int(mask.sum())
            start += size
        loss = float(self.loss()(targets, np.log(np.clip(scores, 1e-7, 1))))
        return {"num_examples": int(len(targets)), "accuracy": correct / max(known, 1),
                "loss": loss}


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)
