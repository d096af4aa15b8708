"""``runway-cnn COMMAND ...``: every ``python -m runway_cnn.COMMAND`` as a subcommand.

    runway-cnn finetune --dataset_dir photos/ ...     runway-cnn predict --model M IMAGE...
    runway-cnn evaluate --model M --dataset_dir D     runway-cnn export --train_dir T
    runway-cnn serving config --export_dir E          runway-cnn report TRAIN_DIR
    runway-cnn checkpoints convert efficientnet_lite0  runway-cnn app --model M [--index I]
    runway-cnn audit --dataset_dir D [--fix]
"""
from __future__ import annotations

import importlib
import sys

from runway_cnn import cli

COMMANDS = {  # subcommand → (module with main(argv), one-line help)
    "finetune": ("runway_cnn.finetune", "fine-tune a backbone on a dataset (two stages)"),
    "export": ("runway_cnn.export.__main__", "re-export a finished run for TF Serving / TFLite"),
    "predict": ("runway_cnn.predict", "predict labels of image files into a CSV"),
    "evaluate": ("runway_cnn.evaluate", "evaluate an export on a labelled folder"),
    "serving": ("runway_cnn.serving", "TF Serving models.config and client"),
    "index": ("runway_cnn.index", "similar-image retrieval: build, query, evaluate"),
    "recommend": ("runway_cnn.recommend", "attribute index of a catalog; similar items"),
    "report": ("runway_cnn.report", "plot a run's or an experiment's figures"),
    "checkpoints": ("runway_cnn.checkpoints", "convert offline ImageNet checkpoints"),
    "datasets": ("runway_cnn.datasets", "convert a dataset into sharded TFRecords"),
    "app": ("runway_cnn.app.__main__", "a local web page and JSON API: a photo in, answers out"),
    "audit": ("runway_cnn.audit.__main__", "duplicates, label errors, outliers, shortcuts of "
                                           "a dataset"),
}


def usage() -> str:
    lines = ["usage: runway-cnn COMMAND [--help | ARGS ...]", "", "commands:"]
    lines += [f"  {name:12s} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] not in COMMANDS:
        print(f"{usage()}\n\nrunway-cnn: unknown command {argv[0]!r}", file=sys.stderr)
        sys.exit(2)
    importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])


def run() -> None:
    """The console script's entry point."""
    cli.run(main)
