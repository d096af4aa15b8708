"""ML-GCN (Chen, Wei, Wang & Guo, "Multi-Label Image Recognition with Graph Convolutional
Networks", CVPR 2019): a graph over the labels turns label embeddings into one classifier per
label, applied to the image features (logits = features · classifiersᵀ).

The label graph follows the paper (Sec. 3.4): conditional probabilities P(L_j | L_i) = M_ij / N_i
counted on the training split, binarised at τ = 0.4, then re-weighted with p = 0.2 — off-diagonal
A'_ij = p / Σ_{k≠i} A_ik, diagonal 1 − p — so each row sums to 1 (a label with no neighbour keeps
only itself, 1). The reference code writes the same rule as 0.25 / column sum with 1 on the
diagonal (0.25 = 0.2 / 0.8) and then normalises D^-½ Aᵀ D^-½; we keep the paper's row form,
which needs no further normalisation. The GCN is the paper's: two layers, LeakyReLU(0.2) between
them, label embeddings (one-hot, or word vectors) → 1024 → the feature width, no bias.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from runway_cnn.errors import DataError, first_line

TAU = 0.4  # binarisation threshold of the conditional probabilities
P = 0.2  # the weight of a label's neighbours (1 - P stays with the label itself)
HIDDEN = 1024


def cooccurrence(targets: np.ndarray) -> np.ndarray:
    """P(L_j | L_i) = M_ij / N_i over multi-hot ``targets`` (row i; 0 for a label without
    images)."""
    y = (np.asarray(targets) > 0.5).astype(np.float64)
    counts = y.sum(axis=0)
    return np.where(counts[:, None] > 0, (y.T @ y) / np.maximum(counts[:, None], 1), 0.0)


def label_adjacency(targets: np.ndarray, tau: float = TAU, p: float = P) -> np.ndarray:
    """The re-weighted label graph Â ``[labels, labels]`` of multi-hot training ``targets``."""
    binary = (cooccurrence(targets) >= tau).astype(np.float64)
    np.fill_diagonal(binary, 0.0)
    neighbours = binary.sum(axis=1, keepdims=True)
    reweighted = np.where(neighbours > 0, p * binary / np.maximum(neighbours, 1), 0.0)
    reweighted[np.diag_indices_from(reweighted)] = np.where(neighbours[:, 0] > 0, 1 - p, 1.0)
    return reweighted.astype(np.float32)


def label_embeddings(path: str | None, labels: Sequence[str]) -> np.ndarray:
    """``[labels, d]`` label vectors: one-hot without ``path``; a ``.npy`` array in label order;
    or a GloVe-style text file (``word v1 v2 …`` a line), a label being the mean of its words'
    vectors (``casual chic`` → casual, chic). A label without vectors, a vector of another width
    than the others or with a NaN or infinite value is an error naming the file and the label,
    row or line."""
    if path is None:
        return np.eye(len(labels), dtype=np.float32)
    flag = f"--label_embeddings {path}"
    try:
        if str(path).endswith(".npy"):
            vectors = np.load(path).astype(np.float32)
            if vectors.shape[0] != len(labels) or vectors.ndim != 2:
                raise DataError(f"{flag}: shape {vectors.shape}, expected "
                                f"[{len(labels)}, d] in label order")
            bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
            if len(bad):
                raise DataError(f"{flag}: row {bad[0]} (label {labels[bad[0]]!r}) is not finite "
                                f"(NaN or infinite values; {len(bad)} such row(s))")
            return vectors
        words = {w for label in labels for w in label.lower().replace("_", " ").split()}
        table, first = {}, None
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                word, _, rest = line.rstrip().partition(" ")
                if word.lower() not in words:
                    continue
                vector = np.array(rest.split(), np.float32)
                first = first or (number, word, len(vector))
                if not len(vector) or len(vector) != first[2]:
                    raise DataError(f"{flag}: line {number} ({word}) has {len(vector)} values, "
                                    f"line {first[0]} ({first[1]}) {first[2]} values: every "
                                    "vector needs the same width")
                if not np.isfinite(vector).all():
                    raise DataError(f"{flag}: line {number} ({word}) is not finite (NaN or "
                                    "infinite values)")
                table[word.lower()] = vector
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {flag}: {first_line(error)}") from error
    missing = [label for label in labels
               if not all(w in table for w in label.lower().replace("_", " ").split())]
    if missing:
        raise DataError(f"--label_embeddings {path} has no vector for: {', '.join(missing)}")
    return np.stack([np.mean([table[w] for w in label.lower().replace("_", " ").split()], axis=0)
                     for label in labels]).astype(np.float32)


@keras.saving.register_keras_serializable(package="runway_cnn")
class GraphClassifier(keras.layers.Layer):
    """Features ``[b, D]`` → logits ``[b, labels]`` = features · (Â σ(Â E W1) W2)ᵀ, σ the
    LeakyReLU(0.2); Â and E are constants, W1 and W2 learned."""

    def __init__(self, adjacency, embeddings, feature_dim: int, hidden: int = HIDDEN, **kwargs):
        super().__init__(**kwargs)
        self.adjacency = np.asarray(adjacency, np.float32)
        self.embeddings = np.asarray(embeddings, np.float32)
        self.feature_dim, self.hidden = int(feature_dim), int(hidden)
        self.w1 = self.add_weight(shape=(self.embeddings.shape[1], self.hidden),
                                  initializer="glorot_uniform", name="gcn1")
        self.w2 = self.add_weight(shape=(self.hidden, self.feature_dim),
                                  initializer="glorot_uniform", name="gcn2")

    def classifiers(self):
        ops = keras.ops
        a = ops.convert_to_tensor(self.adjacency)
        h = ops.leaky_relu(ops.matmul(a, ops.matmul(ops.convert_to_tensor(self.embeddings),
                                                    self.w1)), negative_slope=0.2)
        return ops.matmul(a, ops.matmul(h, self.w2))

    def call(self, features):
        return keras.ops.matmul(features, keras.ops.transpose(self.classifiers()))

    def get_config(self):
        return {**super().get_config(), "adjacency": self.adjacency.tolist(),
                "embeddings": self.embeddings.tolist(), "feature_dim": self.feature_dim,
                "hidden": self.hidden}


def mlgcn_head(feature_dim: int, adjacency, embeddings, dropout: float = 0.0,
               name: str = "head") -> keras.Model:
    """Pooled features → dropout → :class:`GraphClassifier` logits."""
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(features) if dropout else features
    logits = GraphClassifier(adjacency, embeddings, feature_dim, name="logits",
                             dtype="float32")(x)
    return keras.Model(features, logits, name=name)
