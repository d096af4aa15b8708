"""The index store: an index folder on disk, ``index.json`` (the model, the width, every item's
path and, when known, its label / item id; the files skipped) beside ``embeddings.npy`` (float32,
read without pickle); :func:`build_image_index` writes or appends to one, :class:`ImageIndex`
reads it back, checked."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from runway_cnn.errors import DataError, RunwayError, first_line
from runway_cnn.inference.batch import list_images
from runway_cnn.inference.retrieval.embedder import embed_files, load_embedder
from runway_cnn.json_io import read_json, write_json
from runway_cnn.output_checks import check_output_dir, check_own_output
from runway_cnn.tasks.base import checked_arguments

INDEX_JSON, EMBEDDINGS = "index.json", "embeddings.npy"
FORMAT = "runway_cnn image index"
OWN_FILES = (INDEX_JSON, EMBEDDINGS, "neighbours.png")  # what build and query write (the grid)


def item_labels(root: Path | None, files: Sequence[Path], item_ids: str | os.PathLike | None
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


@checked_arguments
def build_image_index(model: str | os.PathLike, images: str | os.PathLike,
                      output: str | os.PathLike, item_ids: str | os.PathLike | None = None,
                      append: bool = False, batch_size: int = 32,
                      progress: bool = True, overwrite: bool = False) -> dict:
    """Embeds the images under ``images`` into the index folder ``output`` (with ``append``,
    only those not in it yet, with the model that built it); returns the index summary. An
    ``output`` holding files other than an earlier index's is refused unless ``overwrite``, and
    so is one inside (or holding) ``images``."""
    output, root = Path(output), Path(images)
    if batch_size < 1:
        raise RunwayError(f"--batch_size {batch_size}: must be at least 1")
    check_output_dir(output, "--output", [("--images", images)])
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
    items = item_labels(root, [new_files[i] for i in kept], item_ids)
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
    meta = write_index(output, vectors, items, skipped, embedder.name, embedder.spec.image_size)
    return {**{k: v for k, v in meta.items() if k != "items"}, "added": len(kept),
            "embed_seconds": seconds}


def write_index(output: Path, vectors: np.ndarray, items: list[dict], skipped: list[dict],
                model: str, image_size: int) -> dict:
    """Writes an index folder: ``embeddings.npy`` (replaced whole), then ``index.json``;
    returns the metadata."""
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{EMBEDDINGS}.{os.getpid()}.tmp.npy"
    np.save(tmp, vectors.astype(np.float32), allow_pickle=False)
    os.replace(tmp, output / EMBEDDINGS)
    meta = {"format": FORMAT, "model": model, "width": int(vectors.shape[1]),
            "count": len(items), "items": items, "skipped": skipped, "image_size": image_size}
    write_json(output / INDEX_JSON, meta)
    return meta


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
