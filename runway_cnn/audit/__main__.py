"""``python -m runway_cnn.audit --dataset_dir DIR [--labels_csv CSV] [--group_by SPEC] [--fix]``:
look at a dataset before trusting a figure — duplicates within and across splits, likely label
errors, outliers, confused classes and the shortcut check, into ``audit.json``, a self-contained
``audit.html`` with thumbnails and PNGs (``--output_dir``), with a summary on stdout. ``--fix``
writes a cleaned CSV manifest; the photos are never touched."""
from __future__ import annotations

import argparse

from runway_cnn import cli


def main(argv: list[str] | None = None) -> dict:
    """Audits the dataset ``argv`` names, prints the summary; returns what ``audit.json``
    holds."""
    from runway_cnn.audit import AuditConfig, audit_dataset  # TensorFlow: inside cli.run
    from runway_cnn.audit.report import summary_text
    from runway_cnn.cli import add_dataclass_flags, add_task_option_flags

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.audit",
                                     description=__doc__.split("\n\n")[0])
    add_dataclass_flags(parser, AuditConfig)
    add_task_option_flags(parser)
    args = parser.parse_args(argv)
    result = audit_dataset(AuditConfig(**vars(args)))
    print(summary_text(result))
    return result


if __name__ == "__main__":
    cli.run(main)
