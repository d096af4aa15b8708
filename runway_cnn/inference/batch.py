"""Top-k predictions for image files and folders, one row per image file (unreadable files
get a row with their ``error``), and the CSV they are written to."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from runway_cnn.data import images
from runway_cnn.data.preprocessing import decode_image
from runway_cnn.errors import RunwayError, first_line
from runway_cnn.inference.predictor import Predictor
from runway_cnn.output_checks import check_output_dir, check_own_output
from runway_cnn.plots import overlay_heatmap
from runway_cnn.progress import ImageProgress
from runway_cnn.tasks import Task
from runway_cnn.tasks.base import checked_arguments

OVERLAYS_CSV, OVERLAYS_HEADER = "overlays.csv", ["path", "label", "score", "overlay"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".mpo",
                  ".heic", ".heif", ".avif")  # the last three get a row saying they can't be read


def read_image(source: str | Path | bytes) -> np.ndarray:
    """uint8 RGB ``[h, w, 3]`` of an image file (or encoded bytes) as the trainer sees it: TF
    decodes what it reads right; EXIF-rotated, non-RGB and other formats go through PIL
    (``scan_image_folder``'s rule). Raises on unreadable images."""
    encoded = isinstance(source, (bytes, bytearray))
    with images.strict_decoding(), Image.open(io.BytesIO(source) if encoded else source) as im:
        if images.conversion_reason(im):
            im.seek(0)
            return np.asarray(images.to_rgb(ImageOps.exif_transpose(im)))
        im.load()  # a truncated file raises here, as it would be skipped for training
    data = tf.constant(bytes(source)) if encoded else tf.io.read_file(os.fsencode(source))
    return decode_image(data).numpy()


def unreadable_reason(error: Exception) -> str:
    """Why :func:`read_image` failed, in a few words for a CSV cell or a skip list."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image"
    if isinstance(error, Image.DecompressionBombError):
        return f"image too large: {first_line(error)}"
    return f"cannot read: {type(error).__name__}: {first_line(error)}"


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively (sorted) for image files, hidden ones left
    out. A folder without any image file is an error naming it."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.is_dir() and not any(part.startswith(".")
                                                   for part in p.relative_to(path).parts))
        if not found:
            raise RunwayError(f"folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        files += found
    return files


@checked_arguments
def predict(model: str | Path | Predictor, inputs: Sequence[str | Path], top_k: int = 5,
            batch_size: int = 32, progress: bool = False,
            probabilities: bool = False, explain_dir: str | Path | None = None,
            overwrite: bool = False) -> list[dict]:
    """One dict per image file of ``inputs`` (see :func:`list_images`), in order: ``path``, the
    task's result (single-label: ``labels`` and ``scores``, the top-k best first, at most the
    export's ``top_k``) and ``error`` ("" when it was read); with ``probabilities``, also the
    task's score vector (``probabilities``, None for an unreadable file). With ``explain_dir``,
    each readable image's Grad-CAM overlays are written there (:func:`write_overlays`, listed in
    ``overlays.csv``) and named in the row's ``overlays``; a folder of other files is refused
    unless ``overwrite`` (:func:`check_explain_dir`)."""
    if batch_size < 1 or top_k < 1:
        raise RunwayError(f"--batch_size {batch_size} / --top_k {top_k}: each must be at least 1")
    check_explain_dir(explain_dir, overwrite, inputs)
    classifier = model if isinstance(model, Predictor) else Predictor(model)
    if explain_dir is not None:
        classifier.require_explain()
        Path(explain_dir).mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
    files = list_images(inputs)
    task = classifier.task
    rows: list[dict] = []
    bar = ImageProgress(len(files)) if progress else None
    for start in range(0, len(files), batch_size):
        batch, good = files[start:start + batch_size], []
        for path in batch:
            row = {"path": str(path), "error": ""}
            if probabilities:
                row["probabilities"] = None
            try:
                good.append((row, classifier.crop(read_image(path))))
            except Exception as error:  # noqa: BLE001 - any unreadable file becomes a row
                row["error"] = unreadable_reason(error)
                row.update(task.empty_result())
            rows.append(row)
        if good:
            crops = np.stack([image for _, image in good])
            if explain_dir is None:
                outputs = classifier.crop_outputs(crops)
                results = task.decode(outputs, "")
            else:
                outputs = classifier.explain_outputs(crops)
                results = classifier.decode_explained(outputs)
            for i, ((row, crop), result) in enumerate(zip(good, results)):
                explanations = result.pop("explanations", None)
                row.update(task.top(result, top_k))
                if probabilities:
                    row["probabilities"] = outputs["probabilities"][i]
                if explanations is not None:
                    row["overlays"] = write_overlays(explain_dir, row["path"], crop,
                                                     explanations, taken)
        if bar is not None:
            bar.add(len(batch))
    if explain_dir is not None:
        with (Path(explain_dir) / OVERLAYS_CSV).open("w", newline="",
                                                    errors="surrogateescape") as f:
            writer = csv.writer(f)
            writer.writerow(OVERLAYS_HEADER)
            writer.writerows([row["path"], *overlay] for row in rows
                             for overlay in row.get("overlays", []))
    return rows


def check_explain_dir(folder: str | Path | None, overwrite: bool = False,
                      inputs: Sequence[str | Path] = ()) -> None:
    """An ``--explain`` folder: new, empty or an earlier one's (its ``overlays.csv``), unless
    ``overwrite``; other files in it are never written over; outside the ``inputs`` (images
    or folders) and holding none of them."""
    if folder is not None:
        check_output_dir(folder, "--explain", [("IMAGE_OR_DIR", path) for path in inputs])
        check_own_output(folder, OVERLAYS_CSV, lambda path: path.read_text().startswith(
            ",".join(OVERLAYS_HEADER)), ("*",), overwrite, "--explain")


def overlay_name(path: str, label: str, taken: set[str]) -> str:
    """``<file stem>.<label>.png``, made safe for a file name and unique among ``taken`` (two
    inputs of the same name get ``-2``, ``-3`` …); the name is added to ``taken``."""
    stem = safe_name(Path(path).stem) or "image"
    name, n = f"{stem}.{safe_name(label)}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.{safe_name(label)}.png"
    taken.add(name)
    return name


def safe_name(text: str) -> str:
    """``text`` made safe as (part of) a file name."""
    return re.sub(r"[^\w=.+-]+", "_", text)[:80].strip(".")


def write_overlays(folder: str | Path, path: str, crop: np.ndarray, explanations: list[dict],
                   taken: set[str]) -> list[list]:
    """One PNG per explained label: its Grad-CAM map in the jet colormap over the eval crop the
    model saw. Returns ``[label, score, file name]`` of each."""
    written = []
    for item in explanations:
        name = overlay_name(path, item["label"], taken)
        Image.fromarray(overlay_heatmap(crop, item["heatmap"])).save(Path(folder) / name)
        written.append([item["label"], round(item["score"], 6), name])
    return written


def write_csv(rows: Sequence[dict], output, top_k: int, task: Task) -> None:
    """``path``, the task's columns (single-label: ``label_1, score_1, …, label_k, score_k``),
    ``error`` per row; ``output`` is a path or an open text file. A file name that is not UTF-8
    is written as its own bytes."""
    header = ["path"] + task.csv_header(top_k) + ["error"]
    with contextlib.ExitStack() as stack:
        if isinstance(output, (str, os.PathLike)):
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            output = stack.enter_context(open(output, "w", newline="",
                                              errors="surrogateescape"))
        writer = csv.writer(output)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row["path"], *task.csv_cells(row, top_k), row["error"]])
