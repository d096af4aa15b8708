"""``python -m runway_cnn.export --train_dir T [--export_dir E] [--serving_name N]
[--keep_versions K] [--top_k K] [--tflite]``: re-export a finished run as the next SavedModel
version for TF Serving (optionally with TFLite files)."""
from __future__ import annotations

import argparse

from runway_cnn import cli


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runway_cnn.export",
        description="Re-export a finished runway_cnn run as the next SavedModel version for TF "
                    "Serving (optionally with TFLite files).")
    parser.add_argument("--train_dir", required=True, help="the run's train dir")
    parser.add_argument("--export_dir", help="export base dir (default: where the run exported)")
    parser.add_argument("--serving_name", help="model name under export_dir (default: the run's)")
    parser.add_argument("--keep_versions", type=int,
                        help="after exporting, delete all but the newest N versions")
    parser.add_argument("--top_k", type=int, help="labels per image (default: the run's top_k)")
    parser.add_argument("--tflite", action="store_true",
                        help="also write float and dynamic-range-quantised .tflite files and "
                             "print their size and decision agreement (single-label: top-1) "
                             "with the SavedModel on the "
                             "validation split")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None):
    """Re-exports the run ``argv`` names; returns the :class:`~runway_cnn.export.reexport.ReexportResult`."""
    args = parse_args(argv)
    from runway_cnn.export.reexport import reexport  # TensorFlow: after the flags are read

    result = reexport(args.train_dir, args.export_dir, args.serving_name, args.keep_versions,
                      args.tflite, args.top_k)
    print(f"export: {result.export_path}  (SavedModel {_megabytes(result.saved_model_bytes)})")
    for path in result.pruned:
        print(f"pruned: {path}")
    for r in result.tflite:
        print(f"tflite {r.variant:13s} {_megabytes(r.size_bytes):>9s}  agreement with the "
              f"SavedModel {r.agreement:6.1%} ({r.num_images} validation images, max "
              f"|p - p_savedmodel| {r.max_abs_diff:.4f})  {r.path}")
    return result


if __name__ == "__main__":
    cli.run(main)
