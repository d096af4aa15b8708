"""Nearest neighbours by cosine similarity over L2-normalised vectors: exact (numpy) or FAISS
(``faiss-cpu``, the ``[faiss]`` extra: flat inner product, HNSW or IVF); ``auto`` picks HNSW
only where its build pays back."""
from __future__ import annotations

import importlib

import numpy as np

from runway_cnn.errors import RunwayError

BACKENDS = ("auto", "exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
# "auto" builds FAISS HNSW only where it pays back its build (BENCHMARKS.md): at 100k items HNSW
# answers in 0.3 ms where exact search takes 19 ms (182 ms at 1M), but building it takes 20 s,
# repaid after ~1,100 single queries or ~12,600 in batches of 100
AUTO_FAISS_FROM, AUTO_FAISS_QUERIES = 100_000, 10_000


class Searcher:
    """Top-k cosine search over L2-normalised ``gallery`` vectors, built once and queried many
    times. ``exact``: one matrix product and a partial sort (ties within the top k: the lower
    index first); ``faiss-*``: FAISS flat inner product, HNSW (M 32, efSearch 64) or IVF (√n
    lists, 16 probed); ``auto``: HNSW for at least ``AUTO_FAISS_FROM`` items and
    ``AUTO_FAISS_QUERIES`` expected queries (a server), when FAISS is installed; else exact."""

    def __init__(self, gallery: np.ndarray, backend: str = "auto", expected_queries: int = 1):
        if backend not in BACKENDS:
            raise RunwayError(f"--backend {backend}: use one of {', '.join(BACKENDS)}")
        if backend == "auto":
            pays = len(gallery) >= AUTO_FAISS_FROM and expected_queries >= AUTO_FAISS_QUERIES
            backend = "faiss-hnsw" if pays and faiss_available() else "exact"
        self.backend, self.size = backend, len(gallery)
        self.gallery = np.ascontiguousarray(gallery, np.float32)
        self._faiss = None if backend == "exact" else _faiss_index(
            self.gallery, backend.removeprefix("faiss-"))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores ``[q, k]``, gallery indices ``[q, k]``), best first."""
        k = min(k, self.size)
        queries = np.ascontiguousarray(queries, np.float32)
        if self._faiss is None:
            scores = queries @ self.gallery.T
            if k < self.size:  # the k best first, then only those sorted
                candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            else:
                candidates = np.broadcast_to(np.arange(self.size), scores.shape)
            best = np.take_along_axis(scores, candidates, axis=1)
            order = np.lexsort((candidates, -best), axis=1)  # ties: the lower index first
            top = np.take_along_axis(candidates, order, axis=1)
            return np.take_along_axis(scores, top, axis=1), top
        if self.backend == "faiss-hnsw":
            self._faiss.hnsw.efSearch = max(64, k)
        return self._faiss.search(queries, k)


def search(gallery: np.ndarray, queries: np.ndarray, k: int, backend: str = "auto"
           ) -> tuple[np.ndarray, np.ndarray]:
    """One search: :class:`Searcher` built and queried once."""
    return Searcher(gallery, backend, expected_queries=len(queries)).search(queries, k)


def faiss_available() -> bool:
    """Whether FAISS (``faiss-cpu``) can be imported."""
    try:
        importlib.import_module("faiss")
    except ImportError:
        return False
    return True


def _faiss_index(gallery: np.ndarray, kind: str):
    try:
        import faiss
    except ImportError:
        raise RunwayError("FAISS search needs faiss-cpu: pip install 'runway_cnn[faiss]'") \
            from None
    width = gallery.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(width)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(width, 32, faiss.METRIC_INNER_PRODUCT)
    else:
        lists = max(1, int(np.sqrt(len(gallery))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(width), width, lists,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(gallery)
        index.nprobe = min(16, lists)
    index.add(gallery)
    return index
