"""The multi-label task's figures as pictures: each label's average precision, and labels ×
labels heat maps (the labels' co-occurrence, ML-GCN's label graph)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def plot_per_label_ap(ap: dict[str, float | None], output: str | Path,
                      title: str = "average precision per label") -> Path:
    """A horizontal bar per label, its average precision, best at the top (labels without a
    positive image are left out)."""
    from runway_cnn.plots import _save, plt  # matplotlib only when drawing

    shown = sorted(((v, k) for k, v in ap.items() if v is not None), reverse=True)
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(shown) + 1.2)))
    ax.barh(range(len(shown)), [v for v, _ in shown], color="tab:blue")
    ax.set_yticks(range(len(shown)), [k for _, k in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return _save(fig, output, dpi=100)


def plot_label_matrix(matrix: np.ndarray, labels: Sequence[str], output: str | Path,
                      title: str, colorbar: str = "P(column | row)") -> Path:
    """A labels × labels heat map (co-occurrence probabilities, a label graph), names on both
    axes."""
    from runway_cnn.plots import _save, plt  # matplotlib only when drawing

    matrix = np.asarray(matrix, np.float64)
    n = len(labels)
    side = min(max(5.0, 0.28 * n + 2.5), 30.0)
    font = max(5.0, min(9.0, 260.0 / max(n, 1)))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1e-9, matrix.max()),
                      interpolation="nearest")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar)
    ax.set_title(title)
    return _save(fig, output, dpi=100)
