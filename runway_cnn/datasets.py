"""``python -m runway_cnn.datasets convert``: a dataset folder (or a folder and its
``--labels_csv``) into sharded TFRecords, as TF-Slim's ``download_and_convert_data`` did.

Example::

    python -m runway_cnn.datasets convert --dataset_dir photos/ --output_dir records/ \\
        --num_shards 8
    python -m runway_cnn.finetune --dataset_dir records/ ...

Each split becomes ``<split>-00000-of-000NN.tfrecord`` shards; ``labels.txt`` and
``dataset.json`` describe them. Every command that takes a dataset folder takes the output
folder too. Bad images are skipped and listed in ``dataset.json``'s data report, as in a scan.
With ``--group_by`` each group stays in one split and every record carries its group (what a
grouped run or experiment on the records needs).
"""
from __future__ import annotations

import argparse

from runway_cnn import cli

SCAN_FLAGS = ("dataset_dir", "labels_csv", "labels_file", "task", "validation_fraction",
              "test_fraction", "seed", "group_by")  # and every task's options
# (add_task_option_flags); --group_by keeps each record's group and splits by it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runway_cnn.training.config import FinetuneConfig

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.datasets",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="write a dataset as sharded TFRecords",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fields = {f.name: f for f in FinetuneConfig.fields()}
    for name in SCAN_FLAGS:
        if name in fields:
            f = fields[name]
            convert.add_argument(f"--{name}", type=cli.flag_type(f), default=f.default,
                                 required=name == "dataset_dir",
                                 help=f.metadata.get("help", ""))
    cli.add_task_option_flags(convert)
    convert.add_argument("--output_dir", required=True, help="a new or empty folder")
    convert.add_argument("--num_shards", type=int, default=4, help="shards per split (at most "
                         "one per image)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from runway_cnn.training.datasets import convert_dataset

    args = vars(parse_args(argv))
    args.pop("command")
    output_dir, num_shards = args.pop("output_dir"), args.pop("num_shards")
    descriptor = convert_dataset(output_dir, num_shards, **args)
    for name, split in descriptor["splits"].items():
        print(f"{name}: {split['count']} images in {len(split['shards'])} shard(s)")
    skipped = len(descriptor["data_report"].get("skipped", []))
    print(f"{skipped} file(s) skipped (see dataset.json's data_report)\noutput: {output_dir}")


if __name__ == "__main__":
    cli.run(main)
