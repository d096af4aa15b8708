"""Evaluation of an index: recall@k and mAP@10 of queries (a folder of photos or another index)
against it, a hit being the same item id or label."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from runway_cnn.errors import DataError
from runway_cnn.inference.retrieval.query import embed_queries
from runway_cnn.inference.retrieval.searcher import search
from runway_cnn.inference.retrieval.store import INDEX_JSON, ImageIndex
from runway_cnn.tasks.base import checked_arguments

RECALL_AT = (1, 5, 10)


@checked_arguments
def evaluate_image_index(index: str | os.PathLike | ImageIndex, queries: str | os.PathLike,
                         backend: str = "auto") -> dict:
    """recall@1/5/10 (share of queries with a hit among the top k) and mAP@10 (per query
    Σₖ P@k·hitₖ / min(hits in the gallery, 10)), a hit being the same item id when both have
    one, else the same label; ``queries`` a folder (embedded with the index's model) or
    another index. Queries without a label or id, or without any hit in the gallery, are
    counted and left out."""
    index = index if isinstance(index, ImageIndex) else ImageIndex(index)
    if (Path(queries) / INDEX_JSON).exists():
        other = ImageIndex(queries)
        if other.meta["width"] != index.meta["width"]:
            raise DataError(f"{queries} holds width-{other.meta['width']} embeddings, {index.path}"
                            f" width {index.meta['width']}: built by different models")
        vectors, items = other.embeddings, other.items
    else:
        vectors, items, _ = embed_queries(index, [queries])

    def key(item: dict) -> str | None:
        return item.get("item_id") or item.get("label")

    gallery_keys = np.array([key(item) or "" for item in index.items])
    usable = [i for i, item in enumerate(items) if key(item)
              and (gallery_keys == key(item)).any()]
    if not usable:
        raise DataError(f"no query of {queries} has a label or item id found in {index.path}")
    depth = max(RECALL_AT)
    _, found = search(index.embeddings, vectors[usable], depth, backend)
    hits = gallery_keys[found] == np.array([key(items[i]) for i in usable])[:, None]
    relevant = np.array([(gallery_keys == key(items[i])).sum() for i in usable])
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    average_precision = (precision * hits).sum(axis=1) / np.minimum(relevant, depth)
    return {"num_queries": len(usable), "left_out": len(items) - len(usable),
            **{f"recall@{k}": float(hits[:, :k].any(axis=1).mean()) for k in RECALL_AT},
            "map@10": float(average_precision.mean())}
