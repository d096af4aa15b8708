"""Similar-image retrieval on learned features: "a photo in, matching items out" (seeds 000, 003).

:func:`build_image_index` embeds every image under a folder with a model — an export or a train
dir (its backbone's pooled features, as the ``embed`` signature gives them) or a backbone registry
name (plain ImageNet features) — L2-normalises the embeddings and writes an index folder:
``index.json`` (the model, the width, every item's path and, when the folder has class
sub-folders or an ``--item_ids`` CSV names them, its label / item id; the files it skipped) and
``embeddings.npy`` (float32, read without pickle). ``append`` embeds only images not yet in the
index. :func:`query_image_index` gives each photo's top-k items by cosine similarity, exactly
(numpy) or with FAISS (``faiss-cpu``, the ``[faiss]`` extra: flat inner product, HNSW or IVF;
``auto`` picks HNSW only where its build pays back);
:func:`evaluate_image_index` measures recall@k and mAP@10, a hit being the same label (or item id).
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runway_cnn.data.pipeline import eval_crop
from runway_cnn.data.preprocessing import PreprocessingSpec
from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.inference.predict import list_images, read_image, unreadable_reason
from runway_cnn.progress import ImageProgress
from runway_cnn.runfiles import check_own_output, read_json, write_json

INDEX_JSON, EMBEDDINGS = "index.json", "embeddings.npy"
FORMAT = "runway_cnn image index"
OWN_FILES = (INDEX_JSON, EMBEDDINGS, "neighbours.png")  # what build and query write (the grid)
BACKENDS = ("auto", "exact", "faiss-flat", "faiss-hnsw", "faiss-ivf")
# "auto" builds FAISS HNSW only where it pays back its build (BENCHMARKS.md's retrieval timings):
# at 100k items HNSW answers in 0.3 ms where exact search takes 19 ms (182 ms at 1M), but
# building it takes 20 s, repaid after ~1,100 single queries or ~12,600 in batches of 100
AUTO_FAISS_FROM, AUTO_FAISS_QUERIES = 100_000, 10_000
RECALL_AT = (1, 5, 10)


@dataclass
class Embedder:
    """A model as the index sees it: ``name`` (what built the index), the eval transform and
    crops → features."""

    name: str
    spec: PreprocessingSpec
    features: Callable[[np.ndarray], np.ndarray]

    def crop(self, image: np.ndarray) -> np.ndarray:
        return eval_crop(image, self.spec)


def load_embedder(model: str | os.PathLike) -> Embedder:
    """An export / train dir (its ``feature_vector`` endpoint), or a backbone registry name."""
    from runway_cnn.backbones.factory import BACKBONES, get_backbone

    if str(model) in BACKBONES and not Path(model).exists():
        import tensorflow as tf

        backbone = get_backbone(str(model))
        features = tf.function(lambda x: backbone.model(x, training=False),
                               reduce_retracing=True)
        return Embedder(str(model), backbone.preprocessing, lambda x: np.asarray(features(x)))
    from runway_cnn.inference.predictor import Predictor

    predictor = Predictor(model)  # the closure keeps the loaded model (and its variables)
    return Embedder(str(predictor.version_dir), predictor.spec,
                    lambda x: np.asarray(predictor.model.feature_vector(x)))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_files(embedder: Embedder, files: Sequence[Path], batch_size: int = 32,
                progress: bool = False) -> tuple[np.ndarray, list[int], list[dict]]:
    """(L2-normalised embeddings of the readable files, their positions in ``files``, the
    unreadable ones with their errors). Files TensorFlow reads as the trainer does are decoded
    in parallel by tf.data; the others (EXIF-rotated, CMYK, 16-bit, other formats) and those
    TensorFlow fails on go through :func:`read_image` one by one, as ``predict`` reads them."""

    from PIL import Image

    from runway_cnn.data import images as image_checks
    from runway_cnn.data.pipeline import indexed_eval_dataset

    native = []
    for i, path in enumerate(files):
        try:
            with image_checks.strict_decoding(), Image.open(path) as im:
                if not image_checks.conversion_reason(im):
                    native.append(i)
        except Exception:  # noqa: BLE001 - read one by one below, which names the problem
            pass
    bar = ImageProgress(len(files)) if progress else None
    vectors, kept = [], []

    def add(positions: list[int], crops: np.ndarray) -> None:
        vectors.append(embedder.features(crops))
        kept.extend(positions)
        if bar is not None:
            bar.add(len(positions))

    if native:
        ds = indexed_eval_dataset([os.fspath(files[i]) for i in native], embedder.spec,
                                  batch_size, skip_unreadable=True)
        for positions, crops in ds.as_numpy_iterator():
            add([native[int(p)] for p in positions], crops)
    skipped, rest = [], sorted(set(range(len(files))) - set(kept))
    for start in range(0, len(rest), batch_size):
        positions, crops = [], []
        for i in rest[start:start + batch_size]:
            try:
                crops.append(embedder.crop(read_image(files[i])))
                positions.append(i)
            except Exception as error:  # noqa: BLE001 - any unreadable file is listed
                skipped.append({"path": str(files[i]), "error": unreadable_reason(error)})
        if crops:
            add(positions, np.stack(crops))
        if bar is not None and len(rest[start:start + batch_size]) > len(positions):
            bar.add(len(rest[start:start + batch_size]) - len(positions))
    if not vectors:
        return np.zeros((0, 0), np.float32), [], skipped
    order = np.argsort(kept, kind="stable")
    return _normalise(np.concatenate(vectors))[order], [kept[i] for i in order], skipped


def _labels(root: Path | None, files: Sequence[Path], item_ids: str | os.PathLike | None
            ) -> list[dict]:
    """Per file: ``label`` (its first sub-folder under the folder ``root``, when it has one)
    and ``item_id`` (from the CSV's ``filename,item_id`` rows, paths relative to ``root``)."""
    ids = {}
    if item_ids:
        try:
            with open(item_ids, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"--item_ids {item_ids}: {first_line(error)}") from None
        if rows and not {"filename", "item_id"} <= set(rows[0]):
            raise DataError(f"--item_ids {item_ids}: needs 'filename' and 'item_id' columns")
        ids = {os.path.normpath(r["filename"]): r["item_id"] for r in rows if r.get("item_id")}
    out = []
    for path in files:
        try:
            relative = path.relative_to(root) if root is not None else Path(path.name)
        except ValueError:
            relative = Path(path.name)
        item = {"path": str(path)}
        if len(relative.parts) > 1:
            item["label"] = relative.parts[0]
        if os.path.normpath(relative) in ids:
            item["item_id"] = ids[os.path.normpath(relative)]
        out.append(item)
    return out


def build_image_index(model: str | os.PathLike, images: str | os.PathLike,
                      output: str | os.PathLike, item_ids: str | os.PathLike | None = None,
                      append: bool = False, batch_size: int = 32,
                      progress: bool = True, overwrite: bool = False) -> dict:
    """Embeds the images under ``images`` into the index folder ``output`` (with ``append``,
    only those not in it yet, with the model that built it); returns the index summary. An
    ``output`` holding files other than an earlier index's is refused unless ``overwrite``."""
    output, root = Path(output), Path(images)
    if batch_size < 1:
        raise RunwayError(f"--batch_size {batch_size}: must be at least 1")
    check_own_output(output, INDEX_JSON, FORMAT, OWN_FILES, overwrite)
    old = ImageIndex(output) if append and (output / INDEX_JSON).exists() else None
    embedder = load_embedder(model)
    if old is not None and embedder.name != old.meta["model"]:
        raise DataError(f"--append to {output}: it was built with {old.meta['model']}, not "
                        f"{model}")
    files = list_images([root])
    known = {item["path"] for item in old.items} if old else set()
    new_files = [f for f in files if str(f) not in known]
    start = time.perf_counter()
    vectors, kept, skipped = embed_files(embedder, new_files, batch_size, progress)
    seconds = time.perf_counter() - start
    items = _labels(root, [new_files[i] for i in kept], item_ids)
    if old is not None:
        if vectors.size and vectors.shape[1] != old.embeddings.shape[1]:
            raise DataError(f"{output}: width {old.embeddings.shape[1]}, the model gives "
                            f"{vectors.shape[1]}")
        vectors = np.concatenate([old.embeddings, vectors]) if len(vectors) else old.embeddings
        items = old.items + items
        skipped = [s for s in old.meta["skipped"] if s["path"] not in
                   {str(f) for f in new_files}] + skipped
    if not len(items):
        raise DataError(f"{root}: no readable images to index ({len(skipped)} unreadable)")
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{EMBEDDINGS}.{os.getpid()}.tmp.npy"
    np.save(tmp, vectors.astype(np.float32), allow_pickle=False)
    os.replace(tmp, output / EMBEDDINGS)
    meta = {"format": FORMAT, "model": embedder.name, "width": int(vectors.shape[1]),
            "count": len(items), "items": items, "skipped": skipped,
            "image_size": embedder.spec.image_size}
    write_json(output / INDEX_JSON, meta)
    return {**{k: v for k, v in meta.items() if k != "items"}, "added": len(kept),
            "embed_seconds": seconds}


class ImageIndex:
    """An index folder, checked: whole arrays of the recorded width and count."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fix = "rebuild it with `python -m runway_cnn.index build`"
        if not (self.path / INDEX_JSON).is_file():
            raise DataError(f"{self.path}: not an image index (no {INDEX_JSON}); {fix}")
        self.meta = read_json(self.path / INDEX_JSON, fix=fix)
        if self.meta.get("format") != FORMAT or not all(
                k in self.meta for k in ("items", "model", "width", "skipped")):
            raise DataError(f"{self.path / INDEX_JSON}: not a runway_cnn image index")
        try:
            self.embeddings = np.load(self.path / EMBEDDINGS, allow_pickle=False)
        except Exception as error:  # noqa: BLE001 - any damage is one line
            raise DataError(f"{self.path / EMBEDDINGS}: damaged or missing "
                            f"({first_line(error)}); {fix}") from None
        self.items = self.meta["items"]
        _check_items(self.path / INDEX_JSON, self.items, fix)
        if self.embeddings.dtype != np.float32 or self.embeddings.shape != (
                len(self.items), self.meta["width"]):
            raise DataError(f"{self.path}: {EMBEDDINGS} holds {self.embeddings.shape} "
                            f"{self.embeddings.dtype}, {INDEX_JSON} says {len(self.items)} items "
                            f"of width {self.meta['width']}; {fix}")


def _check_items(path: Path, items, fix: str) -> None:
    """Every item of an index's JSON is an object with a ``path`` string."""
    if not isinstance(items, list):
        raise DataError(f"{path}: 'items' is not a list; {fix}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise DataError(f"{path}: item {i} has no 'path' ({str(item)[:60]}); {fix}")


# --- search -------------------------------------------------------------------------------------

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
    try:
        import faiss  # noqa: F401
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


class SimilarItems:
    """An index with its search built once, for many queries (a server): ``embedder`` (None
    when the queries come embedded) turns images into query vectors."""

    def __init__(self, index: ImageIndex, embedder: Embedder | None = None,
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
        return _normalise(vectors)

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


# --- query and evaluate -------------------------------------------------------------------------

def _embed_queries(index: ImageIndex, images: Sequence[str | os.PathLike], model=None
                   ) -> tuple[np.ndarray, list[dict], list[dict]]:
    embedder = load_embedder(model or index.meta["model"])
    files = list_images(images)
    vectors, kept, skipped = embed_files(embedder, files)
    if len(vectors) and vectors.shape[1] != index.meta["width"]:
        raise DataError(f"{index.path} holds width-{index.meta['width']} embeddings; "
                        f"{embedder.name} gives width {vectors.shape[1]}")
    roots = [Path(i) for i in images]
    root = roots[0] if len(roots) == 1 and roots[0].is_dir() else None
    return vectors, _labels(root, [files[i] for i in kept], None), skipped


def query_image_index(index: str | os.PathLike | ImageIndex,
                      images: Sequence[str | os.PathLike], k: int = 10, backend: str = "auto",
                      model: str | os.PathLike | None = None,
                      grid: str | os.PathLike | None = None) -> list[dict]:
    """Per photo: ``{"image", "neighbours": [{"path", "score", "label"?, "item_id"?}]}``, best
    first; an unreadable photo ``{"image", "error"}``. ``grid``: a PNG of them too."""
    index = index if isinstance(index, ImageIndex) else ImageIndex(index)
    if k < 1:
        raise RunwayError(f"--k {k}: must be at least 1")
    vectors, queries, skipped = _embed_queries(index, images, model)
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
    return answers


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
        vectors, items, _ = _embed_queries(index, [queries])

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
