"""``python -m runway_cnn.index build|query|evaluate``: similar-image retrieval on learned features.

    python -m runway_cnn.index build --model MODEL --images DIR --output INDEX
        [--item_ids items.csv] [--append] [--overwrite]
    python -m runway_cnn.index query --index INDEX IMAGE... [--k 10] [--json] [--grid g.png]
        [--overwrite]
    python -m runway_cnn.index evaluate --index INDEX --queries DIR_OR_INDEX

MODEL is an export or a train dir (its fine-tuned backbone's pooled features) or a backbone
registry name such as ``efficientnet_lite0`` (plain ImageNet features), so ImageNet and fine-tuned
features compare in two commands. Embeddings are L2-normalised; the score is cosine similarity.
A folder's class sub-folders are the items' labels; ``--item_ids`` (``filename,item_id``) names
items, and a hit in ``evaluate`` is the same item id, else the same label. ``--backend`` picks
exact search (numpy) or FAISS (``pip install 'runway_cnn[faiss]'``); ``auto`` is exact unless the
index has 100k+ items and the call 10k+ queries: only there does FAISS HNSW's build pay back
(at 100k items it takes 20 s and answers in 0.3 ms where exact search takes 19 ms; BENCHMARKS.md).
``build`` writes into a new or empty folder or over an index it built, never inside (or over)
``--images``; a folder holding other files is refused unless ``--overwrite``. ``query --grid``
never writes over one of the photos, nor over a file it did not write, unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import sys

from runway_cnn import cli


def main(argv: list[str] | None = None):
    from runway_cnn.inference.retrieval import (
        BACKENDS,
        ImageIndex,
        build_image_index,
        evaluate_image_index,
        query_image_index,
    )

    parser = argparse.ArgumentParser(prog="python -m runway_cnn.index",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="embed a folder of images into an index")
    build.add_argument("--model", required=True,
                       help="export, train dir, or backbone registry name (ImageNet features)")
    build.add_argument("--images", required=True, help="folder of images (recursive)")
    build.add_argument("--output", required=True, help="index folder to write")
    build.add_argument("--item_ids", help="CSV with filename (relative to --images) and item_id")
    build.add_argument("--append", action="store_true",
                       help="add the images not yet in the index, keeping the others")
    build.add_argument("--batch_size", type=int, default=32)
    build.add_argument("--overwrite", action="store_true",
                       help="write into --output even when it holds files other than an index")
    query = commands.add_parser("query", help="top-k similar items of photos")
    query.add_argument("--index", required=True)
    query.add_argument("images", nargs="+", metavar="IMAGE")
    query.add_argument("--k", type=int, default=10)
    query.add_argument("--backend", default="auto", choices=BACKENDS)
    query.add_argument("--json", action="store_true", help="print JSON instead of text")
    query.add_argument("--grid", help="PNG of the photos and their items (default: "
                                      "neighbours.png in the index folder)")
    query.add_argument("--overwrite", action="store_true",
                       help="write --grid over a file this package did not write (refused "
                            "otherwise; a grid it wrote is written again)")
    evaluate = commands.add_parser("evaluate", help="recall@k and mAP@10 of labelled queries")
    evaluate.add_argument("--index", required=True)
    evaluate.add_argument("--queries", required=True, help="a labelled folder or another index")
    evaluate.add_argument("--backend", default="auto", choices=BACKENDS)
    args = parser.parse_args(argv)
    if args.command == "build":
        summary = build_image_index(args.model, args.images, args.output, args.item_ids,
                                    args.append, args.batch_size,
                                    overwrite=args.overwrite)
        print(f"{summary['added']} images embedded in {summary['embed_seconds']:.1f} s "
              f"({summary['count']} in the index, width {summary['width']}); "
              f"{len(summary['skipped'])} unreadable skipped"
              + "".join(f"\n  skipped {s['path']}: {s['error']}" for s in summary["skipped"]),
              file=sys.stderr)
        return summary
    if args.command == "evaluate":
        figures = evaluate_image_index(args.index, args.queries, args.backend)
        print(json.dumps(figures, indent=1))
        return figures
    index = ImageIndex(args.index)
    grid = args.grid or str(index.path / "neighbours.png")
    answers = query_image_index(index, args.images, args.k, args.backend, grid=grid,
                                overwrite=args.overwrite)
    if args.json:
        print(json.dumps(answers, indent=1, ensure_ascii=False))
    else:
        for answer in answers:
            if "error" in answer:
                print(f"{answer['image']}: {answer['error']}")
                continue
            print(answer["image"])
            for n in answer["neighbours"]:
                tag = n.get("item_id") or n.get("label") or ""
                print(f"  {n['score']:.4f}  {n['path']}  {tag}".rstrip())
    print(f"grid → {grid}", file=sys.stderr)
    return answers


if __name__ == "__main__":
    cli.run(main)
