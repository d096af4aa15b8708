"""Similar items of photos: :class:`SimilarItems` (an index with its search built once, for a
server) and :func:`query_image_index` (each photo's top-k items, optionally as a PNG grid)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from runway_cnn.backbones.features import FeatureExtractor
from runway_cnn.errors import DataError, RunwayError
from runway_cnn.inference.batch import list_images
from runway_cnn.inference.retrieval.embedder import embed_files, load_embedder, normalise
from runway_cnn.inference.retrieval.searcher import AUTO_FAISS_QUERIES, Searcher
from runway_cnn.inference.retrieval.store import ImageIndex, item_labels
from runway_cnn.output_checks import check_output_file, record_written
from runway_cnn.tasks.base import checked_arguments


class SimilarItems:
    """An index with its search built once, for many queries (a server): ``embedder`` (None
    when the queries come embedded) turns images into query vectors."""

    def __init__(self, index: ImageIndex, embedder: FeatureExtractor | None = None,
                 backend: str = "auto", expected_queries: int = AUTO_FAISS_QUERIES):
        self.index, self.embedder = index, embedder
        self.searcher = Searcher(index.embeddings, backend, expected_queries)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 ``[h, w, 3]`` images (as :func:`read_image` gives them) → L2-normalised query
        vectors, as :func:`embed_files` makes the index's."""
        vectors = self.embedder.features(np.stack([self.embedder.crop(i) for i in images]))
        if vectors.shape[1] != self.index.meta["width"]:
            raise DataError(f"{self.index.path} holds width-{self.index.meta['width']} "
                            f"embeddings; {self.embedder.name} gives width {vectors.shape[1]}")
        return normalise(vectors)

    def search(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Per query vector: (item position, cosine similarity) of its top ``k``, best first."""
        scores, found = self.searcher.search(vectors, k)
        return [[(int(j), float(s)) for s, j in zip(row_scores, row) if j >= 0]
                for row_scores, row in zip(scores, found)]

    def neighbours(self, vectors: np.ndarray, k: int) -> list[list[dict]]:
        """Per query vector: its top ``k`` items (``path``, ``label``?, ``item_id``?) with their
        ``score``."""
        return [[{**self.index.items[j], "score": s} for j, s in row]
                for row in self.search(vectors, k)]


def embed_queries(index: ImageIndex, images: Sequence[str | os.PathLike], model=None
                  ) -> tuple[np.ndarray, list[dict], list[dict]]:
    """(embeddings, items, unreadable files) of the photos ``images``, embedded with the
    index's model (or ``model``) and checked against its width."""
    embedder = load_embedder(model or index.meta["model"])
    files = list_images(images)
    vectors, kept, skipped = embed_files(embedder, files)
    if len(vectors) and vectors.shape[1] != index.meta["width"]:
        raise DataError(f"{index.path} holds width-{index.meta['width']} embeddings; "
                        f"{embedder.name} gives width {vectors.shape[1]}")
    roots = [Path(i) for i in images]
    root = roots[0] if len(roots) == 1 and roots[0].is_dir() else None
    return vectors, item_labels(root, [files[i] for i in kept], None), skipped


@checked_arguments
def query_image_index(index: str | os.PathLike | ImageIndex,
                      images: Sequence[str | os.PathLike], k: int = 10, backend: str = "auto",
                      model: str | os.PathLike | None = None,
                      grid: str | os.PathLike | None = None, overwrite: bool = False
                      ) -> list[dict]:
    """Per photo: ``{"image", "neighbours": [{"path", "score", "label"?, "item_id"?}]}``, best
    first; an unreadable photo ``{"image", "error"}``. ``grid``: a PNG of them too (not one of
    the photos, nor a file this package did not write, unless ``overwrite``)."""
    check_output_file(grid, "--grid", [("IMAGE", image) for image in images], overwrite)
    index = index if isinstance(index, ImageIndex) else ImageIndex(index)
    if k < 1:
        raise RunwayError(f"--k {k}: must be at least 1")
    vectors, queries, skipped = embed_queries(index, images, model)
    found_for = {}
    if len(vectors):
        found = SimilarItems(index, None, backend, len(vectors)).neighbours(vectors, k)
        found_for = {q["path"]: row for q, row in zip(queries, found)}
    errors = {s["path"]: s["error"] for s in skipped}
    answers = [{"image": str(f), "neighbours": found_for[str(f)]} if str(f) in found_for else
               {"image": str(f), "error": errors.get(str(f), "not embedded")}
               for f in list_images(images)]
    if grid is not None:
        from runway_cnn.plots import plot_neighbour_grid

        def caption(item: dict) -> str:
            return item.get("item_id") or item.get("label") or Path(item["path"]).name

        shown = [{"image": a["image"], "result": {"path": a["image"]},
                  "neighbours": [{"path": n["path"], "distance": n["score"], "result": n}
                                 for n in a["neighbours"]]}
                 for a in answers if "neighbours" in a]
        plot_neighbour_grid(shown, caption, grid, f"top {k} by cosine similarity "
                            f"({Path(index.meta['model']).name})")
        record_written(grid)
    return answers
