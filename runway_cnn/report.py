"""Plots of a run: training curves of both stages, with the stage boundary marked.

``python -m runway_cnn.report TRAIN_DIR`` writes them as PNGs into the train dir.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES_FILE = "training_curves.png"


def read_history(train_dir: str | Path) -> dict[str, list[dict[str, float]]]:
    """Per stage, the epoch rows Keras' CSVLogger wrote (resumed runs included)."""
    history = {}
    for stage in ("stage1", "stage2"):
        path = Path(train_dir) / stage / "history.csv"
        if path.exists():
            with path.open() as f:
                history[stage] = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                                  for row in csv.DictReader(f)]
    return history


def plot_training_curves(train_dir: str | Path, output: str | Path | None = None) -> Path | None:
    """Loss and accuracy per epoch across both stages; returns the PNG path (None: no history)."""
    history = read_history(train_dir)
    if not history:
        return None
    output = Path(output or Path(train_dir) / CURVES_FILE)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "top1")):
        offset = 0
        for stage, rows in history.items():
            epochs = [offset + i + 1 for i in range(len(rows))]
            for prefix, style in (("", "-"), ("val_", "--")):
                values = [row.get(prefix + metric) for row in rows]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, style, marker=".",
                            label=f"{stage} {'validation' if prefix else 'train'}")
            offset += len(rows)
            if stage == "stage1" and "stage2" in history:
                ax.axvline(offset + 0.5, color="grey", linestyle=":", label="unfreeze")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"training curves: {Path(train_dir).name}")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runway_cnn.report", description=__doc__)
    parser.add_argument("train_dir", help="a runway_cnn train dir")
    args = parser.parse_args(argv)
    print(plot_training_curves(args.train_dir) or f"no training history in {args.train_dir}")


if __name__ == "__main__":
    main()
