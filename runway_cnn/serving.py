"""``python -m runway_cnn.serving``: TF Serving helpers.

    python -m runway_cnn.serving config --export_dir exports/ [--output F] [--base_path /models]
        [--overwrite]
    python -m runway_cnn.serving predict --host localhost --model looks [--protocol grpc] IMAGE...
"""
from __future__ import annotations

import argparse
import sys

from runway_cnn import cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runway_cnn.inference.client import DEFAULT_PORTS

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.serving",
                                     description="TF Serving helpers for runway_cnn exports.")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write a models.config for every model under "
                                                "an export dir")
    config.add_argument("--export_dir", required=True, help="export base dir")
    config.add_argument("--output", help="where to write it (default: <export_dir>/models.config)")
    config.add_argument("--overwrite", action="store_true",
                        help="write over an --output this package did not write (refused "
                             "otherwise; a models.config it wrote is written again)")
    config.add_argument("--base_path", help="the export dir as the server sees it, e.g. /models "
                                            "in docker (default: its absolute local path)")
    predict = commands.add_parser("predict", help="classify images with a model on TF Serving")
    predict.add_argument("--host", required=True, help="host, host:port or http://host:port")
    predict.add_argument("--model", required=True, help="the model's serving name")
    predict.add_argument("--protocol", choices=tuple(DEFAULT_PORTS), default="rest")
    predict.add_argument("--version", type=int, help="model version (default: the newest)")
    predict.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    predict.add_argument("--per_image_errors", action="store_true",
                         help="report undecodable images one by one instead of failing")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    return parser.parse_args(argv)


def format_result(name: str, result: dict) -> str:
    if "error" in result:
        return f"{name}: error: {result['error']}"
    return f"{name}: " + ", ".join(f"{label} {score:.3f}"
                                   for label, score in zip(result["labels"], result["scores"]))


def main(argv: list[str] | None = None, out=None) -> None:
    from runway_cnn.inference.client import Client
    from runway_cnn.inference.serving_config import model_dirs, write_models_config

    out = out or sys.stdout
    args = parse_args(argv)
    if args.command == "config":
        path = write_models_config(args.export_dir, args.output, args.base_path,
                                   args.overwrite)
        names = ", ".join(p.name for p in model_dirs(args.export_dir))
        print(f"wrote {path} ({names})", file=out)
        return
    with Client(args.host, args.model, args.protocol, args.timeout, args.version) as client:
        results = client.predict(args.images, per_image_errors=args.per_image_errors)
    for name, result in zip(args.images, results):
        print(format_result(name, result), file=out)


if __name__ == "__main__":
    cli.run(main)
