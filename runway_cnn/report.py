"""``python -m runway_cnn.report TRAIN_DIR``: every plot of a run or an experiment, as PNGs in its
train dir (an experiment's runs get theirs in their own folders)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runway_cnn import cli
from runway_cnn.errors import RunwayError
from runway_cnn.train_dir import TrainDir


def report(train_dir: str | Path) -> list[Path]:
    """Every plot of a train dir: training curves; for an experiment, the box plot and each
    run's curves. Returns the PNG paths."""
    from runway_cnn.plots import plot_split_accuracy, plot_training_curves, read_summary

    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        raise RunwayError(f"train dir {train_dir} does not exist")
    written = [p for p in [plot_training_curves(train_dir)] if p]
    if TrainDir(train_dir).summary.exists():
        written.append(plot_split_accuracy(train_dir))
        runs = read_summary(train_dir)["runs"]
        written += [p for r in runs if (p := plot_training_curves(train_dir / r["run"]))]
    if not written:
        raise RunwayError(f"{train_dir} has no training history (stage1/history.csv) and no "
                          "experiment summary (summary.json)")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runway_cnn.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("train_dir", help="a runway_cnn train dir (or an experiment's)")
    args = parser.parse_args(argv)
    for path in report(args.train_dir):
        print(path)


if __name__ == "__main__":
    cli.run(main)
