"""The attributes task's figures as pictures: per attribute its accuracy, macro-F1 and balanced
accuracy beside its majority value's."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_attribute_scores(per_attribute: dict[str, dict], output: str | Path,
                          title: str = "figures per attribute") -> Path:
    """Per attribute, its accuracy, macro-F1 and balanced accuracy as bars, each with its
    majority-value baseline as a black tick (with the ``_std`` error bars when given)."""
    from runway_cnn.plots import _save, plt  # matplotlib only when drawing

    names = list(per_attribute)
    figures = (("accuracy", "tab:blue"), ("macro_f1", "tab:orange"),
               ("balanced_accuracy", "tab:green"))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.5 * len(names) + 1.3)))
    height = 0.26
    for k, (figure, color) in enumerate(figures):
        y = np.arange(len(names)) + (k - 1) * height
        values = [per_attribute[a][figure] for a in names]
        errors = [per_attribute[a].get(f"{figure}_std", 0.0) for a in names]
        ax.barh(y, values, height, xerr=errors if any(errors) else None, color=color,
                label=figure.replace("_", " "))
        ax.scatter([per_attribute[a][f"majority_{figure}"] for a in names], y, marker="|",
                   s=120, color="black", zorder=3, label="majority value" if k == 0 else None)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    return _save(fig, output, dpi=100)
