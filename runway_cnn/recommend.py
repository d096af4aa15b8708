"""``python -m runway_cnn.recommend build|query``: similar catalog items from predicted attributes.

    python -m runway_cnn.recommend build --model EXPORT --catalog DIR --output INDEX
        [--color_by ATTRIBUTE] [--overwrite]
    python -m runway_cnn.recommend query --index INDEX IMAGE... [--k 4]
        [--attributes neckline,pattern] [--json] [--grid neighbours.png] [--overwrite]

``build`` runs the export over every image under the catalog folder (a progress bar; unreadable
files listed and skipped), keeps each item's attribute probabilities, fits a 2-D attribute map
(a small autoencoder, PCA beside it) and writes the index folder with ``map.png``: a new or empty
folder, or an index it built, never inside (or over) the catalog; a folder holding other files
is refused unless ``--overwrite``.
``query`` prints the k catalog items nearest to each photo in attribute space (optionally on some
attributes only) with their attributes and distances, or JSON with ``--json``; ``--grid`` also
draws them (default: ``neighbours.png`` in the index folder; never over one of the photos or a
file it did not write, unless ``--overwrite``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runway_cnn import cli


def main(argv: list[str] | None = None):
    from runway_cnn.inference.attribute_index import (
        MAP_PNG,
        AttributeIndex,
        build_attribute_index,
        query_attribute_index,
    )
    from runway_cnn.tasks import task_from_config

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.recommend",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="index a catalog folder")
    build.add_argument("--model", required=True, help="an export (or train dir) of any task; "
                                                      "an attributes model is the intended one")
    build.add_argument("--catalog", required=True, help="folder of catalog photos (recursive)")
    build.add_argument("--output", required=True, help="index folder to write")
    build.add_argument("--color_by", help="attribute that colours the map (default: the first)")
    build.add_argument("--epochs", type=int, default=300, help="autoencoder training epochs")
    build.add_argument("--batch_size", type=int, default=32)
    build.add_argument("--overwrite", action="store_true",
                       help="write into --output even when it holds files other than an index")
    query = commands.add_parser("query", help="nearest catalog items to photos")
    query.add_argument("--index", required=True)
    query.add_argument("images", nargs="+", metavar="IMAGE")
    query.add_argument("--k", type=int, default=4, help="items per photo")
    query.add_argument("--attributes", help="compare on these attributes only, comma-separated")
    query.add_argument("--model", help="the export to read the photos with (default: the one "
                                       "that built the index)")
    query.add_argument("--json", action="store_true", help="print JSON instead of text")
    query.add_argument("--grid", help="PNG of the photos and their items (default: "
                                      "neighbours.png in the index folder)")
    query.add_argument("--overwrite", action="store_true",
                       help="write --grid over a file this package did not write (refused "
                            "otherwise; a grid it wrote is written again)")
    args = parser.parse_args(argv)
    if args.command == "build":
        summary = build_attribute_index(args.model, args.catalog, args.output, args.color_by,
                                        epochs=args.epochs, batch_size=args.batch_size,
                                        overwrite=args.overwrite)
        figures = summary["map"]
        print(f"{summary['count']} items indexed, {len(summary['skipped'])} unreadable skipped"
              + "".join(f"\n  skipped {s['path']}: {s['error']}" for s in summary["skipped"]),
              file=sys.stderr)
        ae, pca = figures["autoencoder"], figures["pca"]
        print(f"map: autoencoder reconstruction MSE {ae['reconstruction_mse']:.4f}, "
              f"trustworthiness {ae['trustworthiness']:.3f}; PCA {pca['reconstruction_mse']:.4f},"
              f" {pca['trustworthiness']:.3f} → {Path(args.output) / MAP_PNG}", file=sys.stderr)
        return summary
    index = AttributeIndex(args.index)
    grid = args.grid or str(index.path / "neighbours.png")
    groups = [g.strip() for g in args.attributes.split(",") if g.strip()] \
        if args.attributes else None
    answers = query_attribute_index(index, args.images, args.k, groups, args.model, grid,
                                    args.overwrite)
    if args.json:
        print(json.dumps(answers, indent=1, ensure_ascii=False))
    else:
        describe = task_from_config(index.meta["task"]).describe  # the query checked it
        for answer in answers:
            if "error" in answer:
                print(f"{answer['image']}: {answer['error']}")
                continue
            print(f"{answer['image']}: {describe(answer['result'], 99)}")
            for n in answer["neighbours"]:
                print(f"  {n['distance']:.4f}  {n['path']}  {describe(n['result'], 99)}")
    print(f"grid → {grid}", file=sys.stderr)
    return answers


if __name__ == "__main__":
    cli.run(main)
