"""``python -m runway_cnn.predict --model PATH IMAGE_OR_DIR ... [--top_k 5] [--output preds.csv]
[--explain DIR [--overwrite]]``: the top-k labels of image files, one CSV row per image.

PATH is an export version dir, an export base / serving-name dir (newest version) or a train dir.
Folders are searched recursively for image files (``.jpg``, ``.png``, ``.gif``, ``.bmp``,
``.webp``, ``.tif`` …; hidden files are left out); files named on the command line are always
tried. A file that cannot be read gets a row with its ``error`` and no labels, never a crash.
Images are read as the trainer reads them (EXIF rotation applied; formats TF cannot decode go
through PIL) and get the export's eval transform. Without ``--output`` the CSV goes to stdout;
the progress bar goes to stderr. ``--explain DIR`` writes Grad-CAM overlays of the predicted
labels over the eval crop (``<file stem>.<label>.png``, listed in ``DIR/overlays.csv``); a DIR
holding other files than an earlier ``--explain``'s is refused unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys

from runway_cnn import cli
from runway_cnn.errors import RunwayError
from runway_cnn.output_checks import check_output_file, record_written


def main(argv: list[str] | None = None) -> list[dict]:
    from runway_cnn.inference.batch import check_explain_dir, list_images, predict, write_csv
    from runway_cnn.inference.predictor import Predictor

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="export version dir, export base / serving-name dir, or train dir")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    parser.add_argument("--top_k", type=int, default=5, help="labels per image")
    parser.add_argument("--output", help="CSV file to write (default: stdout)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--explain", metavar="DIR",
                        help="also write each image's Grad-CAM overlays into DIR: one PNG per "
                             "predicted label (single-label: the top-1; multi-label: each "
                             "predicted label; attributes: each attribute's value), listed in "
                             "DIR/overlays.csv; needs a backbone with a feature map")
    parser.add_argument("--overwrite", action="store_true",
                        help="write --output over a file this package did not write, and into "
                             "an --explain DIR that holds other files (refused otherwise; an "
                             "earlier --output CSV or --explain DIR is written over)")
    args = parser.parse_args(argv)
    check_output_file(args.output, "--output", [("IMAGE_OR_DIR", path) for path in args.inputs],
                      args.overwrite)
    check_explain_dir(args.explain, args.overwrite, args.inputs)
    if args.batch_size < 1 or args.top_k < 1:
        raise RunwayError(f"--batch_size {args.batch_size} / --top_k {args.top_k}: each must be "
                          "at least 1")
    classifier = Predictor(args.model)
    files = list_images(args.inputs)
    rows = predict(classifier, files, args.top_k, args.batch_size,
                   progress=len(files) > args.batch_size, explain_dir=args.explain,
                   overwrite=args.overwrite)
    if args.explain:
        written = sum(len(r.get("overlays", [])) for r in rows)
        print(f"{written} Grad-CAM overlays → {args.explain}", file=sys.stderr)
    if args.output:
        write_csv(rows, args.output, args.top_k, classifier.task)
        record_written(args.output)
        failed = sum(bool(r["error"]) for r in rows)
        print(f"{len(rows)} images ({failed} unreadable) → {args.output}", file=sys.stderr)
    else:
        if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8, as their bytes
            sys.stdout.reconfigure(errors="surrogateescape")
        write_csv(rows, sys.stdout, args.top_k, classifier.task)
    return rows


if __name__ == "__main__":
    cli.run(main)
