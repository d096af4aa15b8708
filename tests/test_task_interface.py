"""The task interface is the only seam: a toy attribute task defined in this file alone (two
softmax heads over one backbone, unknown cells masked out of the loss) reads its CSV, trains,
exports, serves through Predictor and predict's CSV, and restores — with nothing in training,
export or inference knowing it exists."""
from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import make_image
from runway_cnn import FinetuneConfig, fine_tune
from runway_cnn.data.splits import by_group
from runway_cnn.inference.predictor import Predictor
from runway_cnn.tasks import TASKS, Task
from runway_cnn.training.restore import restore_run
from helpers import predict_csv_rows
from tiny_models import make_tiny_hub_module

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

    def __init__(self, labels):
        super().__init__(labels)
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

    def unknown_labels(self, raw_labels):
        return {}

    def targets(self, raw_labels, where):
        return np.array([[self.values[a].index(r[a]) if r[a] else -1 for a in self.attributes]
                         for r in raw_labels], np.int32)

    def label_counts(self, targets):
        return {f"{a}={v}": int((targets[:, i] == j).sum())
                for i, a in enumerate(self.attributes) for j, v in enumerate(self.values[a])}

    def split(self, targets, validation_fraction, test_fraction, seed, groups=None):
        def random_split(rows):
            order = np.random.default_rng(seed).permutation(len(rows))
            n_val, n_test = int(len(order) * validation_fraction), int(len(order) * test_fraction)
            return {"train": np.sort(order[n_val + n_test:]),
                    "validation": np.sort(order[:n_val]),
                    "test": np.sort(order[n_val:n_val + n_test])}
        return by_group(random_split, targets, groups)

    def build_head(self, feature_dim):
        features = keras.Input((feature_dim,))
        logits = keras.layers.Dense(len(self.labels), name="logits")(features)
        return keras.Model(features, logits, name="head")

    def loss(self):
        return MaskedAttributeLoss([len(self.values[a]) for a in self.attributes])

    def metrics(self):
        return []

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

    def empty_result(self):
        return {}

    def csv_header(self, top_k):
        return list(self.attributes)

    def csv_cells(self, result, top_k):
        return [result[a]["value"] if a in result else "" for a in self.attributes]

    def agreement(self, reference, scores):
        return float(np.mean(reference.argmax(1) == scores.argmax(1)))

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

    def predictions(self, sources, targets, scores):
        return [{"source": s} for s in sources]


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


if "toy_attributes" not in TASKS:
    TASKS.register("toy_attributes", ToyAttributeTask)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_task")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for kind in range(8):
        for i in range(8):
            name = f"k{kind}_{i}.jpg"
            image = make_image(kind, tuple(int(v) for v in rng.integers(40, 73, 2)), rng)
            if kind >= 4:
                image = image.point(lambda v: v // 2)
            image.save(photos / name, quality=90)
            tone = "dark" if kind >= 4 else "light"
            rows.append((name, ATTRIBUTES["pattern"][kind % 4], "" if i == 0 else tone))
    with (root / "attributes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "pattern", "tone"])
        writer.writerows(rows)
    result = fine_tune(FinetuneConfig(
        dataset_dir=str(photos), labels_csv=str(root / "attributes.csv"),
        task="toy_attributes", train_dir=str(root / "run"),
        model_name=f"hub:{make_tiny_hub_module(root / 'hub')}", image_size=32, batch_size=8,
        stage1_epochs=30, stage2_epochs=0, learning_rate=1e-2, validation_fraction=0.25,
        test_fraction=0.25, verbose=0))
    return root, photos, result


def test_unknown_cells_never_reach_the_loss():
    task = ToyAttributeTask(["pattern=a", "pattern=b", "tone=x", "tone=y"])
    targets = np.array([[0, -1], [1, 1]], np.int32)
    logits = np.array([[2.0, -1.0, 0.3, 0.9], [0.1, 0.4, -2.0, 1.0]], np.float32)
    changed = logits.copy()
    changed[0, 2:] = [9.0, -9.0]  # the unknown tone cell of image 0
    loss = task.loss()
    assert float(loss(targets, logits)) == pytest.approx(float(loss(targets, changed)))
    changed[0, :2] = [-9.0, 9.0]  # a known cell does count
    assert float(loss(targets, logits)) != pytest.approx(float(loss(targets, changed)))


def test_a_task_defined_in_a_test_file_trains_exports_and_serves(toy_run, tmp_path):
    root, photos, result = toy_run
    assert result.task.name == "toy_attributes"
    assert result.metrics["test"]["accuracy"] > 0.6  # chance: (1/4 + 1/2) / 2
    assert result.metrics["stages"]["stage1"]["solver"] == {"solver": "adam"}  # no convex form
    predictor = Predictor(result.export_path)
    assert isinstance(predictor.task, ToyAttributeTask)
    files = sorted(photos.glob("k*_1.jpg"))
    answers = predictor.predict(files + [b"not a photo"], per_image_errors=True)
    assert answers[-1]["error"]
    assert all(set(a) == {"pattern", "tone"} for a in answers[:-1])
    hits = [a["pattern"]["value"] == ATTRIBUTES["pattern"][int(f.name[1]) % 4]
            for a, f in zip(answers, files)]
    assert sum(hits) >= 6
    rows = predict_csv_rows(result.export_path, files, tmp_path / "p.csv")
    assert list(rows[0]) == ["path", "pattern", "tone", "error"]
    assert [r["pattern"] for r in rows] == [a["pattern"]["value"] for a in answers[:-1]]
    restored = restore_run(result.train_dir)
    assert isinstance(restored.task, ToyAttributeTask) and restored.task.labels == \
        result.task.labels
