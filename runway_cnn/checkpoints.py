"""``python -m runway_cnn.checkpoints convert NAME [--output DIR]``: convert a checkpoint's PyTorch
weights to TF-Hub-format SavedModels and print the ImageNet top-5 of sample photos (see
:mod:`runway_cnn.backbones.checkpoints`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runway_cnn import cli


def main(argv: list[str] | None = None) -> None:
    import tensorflow as tf

    from runway_cnn.backbones.checkpoints import (
        CHECKPOINTS,
        CLASSIFICATION,
        FEATURE_VECTOR,
        checkpoint_root,
        convert,
        describe_top5,
    )

    parser = argparse.ArgumentParser(
        prog="python -m runway_cnn.checkpoints", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser("convert", help="convert PyTorch weights to SavedModels")
    convert_parser.add_argument("name", help=f"one of: {', '.join(CHECKPOINTS.names())}")
    convert_parser.add_argument(
        "--output", type=Path, help=f"root folder (default: {checkpoint_root()})"
    )
    args = parser.parse_args(argv)
    target = convert(args.name, args.output)
    classifier = tf.saved_model.load(str(target / CLASSIFICATION))
    print(f"wrote {target / FEATURE_VECTOR}")
    print(f"wrote {target / CLASSIFICATION}")
    print("ImageNet top-5 (class index, label, probability):")
    print(describe_top5(args.name, classifier))


if __name__ == "__main__":
    cli.run(main)
