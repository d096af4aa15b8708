"""``python -m runway_cnn.finetune``: the two-stage fine-tune from the command line.

Example::

    python -m runway_cnn.finetune --dataset_dir photos/ --train_dir runs/brands \\
        --export_dir exports/ --model_name efficientnet_lite0

Every flag is a field of :class:`runway_cnn.FinetuneConfig` or an option of a task (the fields
of its ``options_class``: ``--head``, ``--attributes``, ``--target_column`` …); the run is
``runway_cnn.fine_tune(...)``. With ``--num_splits N`` or ``--kfold K`` it runs that many runs on
stratified splits of all images and summarises them (``runway_cnn.experiments``).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from runway_cnn import cli

if TYPE_CHECKING:
    from runway_cnn.training.config import FinetuneConfig


class _ListBackbones(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from runway_cnn.backbones.factory import BACKBONES

        for name in BACKBONES:
            entry = BACKBONES.get(name)
            print(f"{name:22s} {entry.image_size:4d}px  {entry.description}")
        parser.exit()


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    from runway_cnn.training.config import FinetuneConfig

    parser = argparse.ArgumentParser(
        prog="python -m runway_cnn.finetune", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_dataclass_flags(parser, FinetuneConfig)
    cli.add_task_option_flags(parser)
    parser.add_argument("--list_backbones", nargs=0, action=_ListBackbones,
                        help="print the backbone registry and exit")
    args = vars(parser.parse_args(cli.numbers_as_values(sys.argv[1:] if argv is None
                                                        else list(argv))))
    args.pop("list_backbones", None)
    return FinetuneConfig(**args)


def main(argv: list[str] | None = None) -> None:
    from runway_cnn.api import fine_tune
    from runway_cnn.training.experiments import format_summary
    from runway_cnn.training.refit import describe as describe_refit

    config = parse_args(argv)
    try:
        result = fine_tune(config)
    except KeyboardInterrupt:  # what a stopped run's train dir is for
        raise KeyboardInterrupt("interrupted; run the same command again to resume") from None
    if result.is_experiment:
        print(format_summary(result.metrics))
        if result.export_path is not None:
            print(f"{describe_refit(result.metrics['refit'])}\nexport: {result.export_path}")
        return
    lines = [f"{split}: {result.task.headline(result.metrics[split])}  "
             f"({result.metrics[split]['num_examples']} images)"
             for split in ("validation", "test") if split in result.metrics]
    print("\n".join(lines))
    refit = result.metrics.get("refit")
    if refit:  # a run from before the refit has none
        print(describe_refit(refit))
        if "test" in refit:
            print(f"test, the export itself (refit on {' + '.join(refit['splits'])}): "
                  f"{result.task.headline(refit['test'])}")
    seconds = result.metrics.get("seconds") or {  # a run from before the breakdown
        k: v.get("seconds", 0.0) for k, v in result.metrics["stages"].items()}
    print("seconds: " + json.dumps({k: round(v, 1) for k, v in seconds.items()})
          + " (set-up, not charged to --time_budget: backbone, image_cache)")
    if not (result.train_dir / "metrics.json").exists():  # a multi-worker run's other workers
        print("this worker's files were temporary: the chief's train dir holds the run")
        return
    print(f"metrics: {result.train_dir / 'metrics.json'}\nexport: {result.export_path}")


if __name__ == "__main__":
    cli.run(main)
