"""CSV manifests: ``--labels_csv`` names the images of ``--dataset_dir`` (a ``filename`` column,
paths relative to the folder) and their labels (the task's columns: ``label``, ``labels`` …).

Every row is accounted for: a row that cannot be used (empty or duplicate file name, a path that
leaves the image folder, a file that does not exist, a label cell the task cannot read, a row
with too few or too many cells) is a *bad row* in the data report with its line number and
reason; a file that exists but is no usable image is *skipped* with the reason, as in a folder
scan, and odd images are converted the same way.
"""
from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from runway_cnn.data.images import check_images
from runway_cnn.errors import DataError, first_line
from runway_cnn.runfiles import TrainDir

FILENAME = "filename"


@dataclass
class ManifestRows:
    """The usable rows of a manifest, in file order, and what became of the others."""

    root: Path
    csv_path: Path
    sources: list[str] = field(default_factory=list)  # relative to root
    paths: list[str] = field(default_factory=list)  # what TF reads (converted copies if needed)
    raw_labels: list[Any] = field(default_factory=list)
    bad_rows: list[dict] = field(default_factory=list)  # {"line", "filename", "reason"}
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: not an image
    converted: list[dict] = field(default_factory=list)  # {"source", "path", "reason"}
    columns: dict[str, list[str]] = field(default_factory=dict)  # kept column → cell per row
    tmpdir: tempfile.TemporaryDirectory | None = None


def scan_labels_csv(dataset_dir: str | os.PathLike, labels_csv: str | os.PathLike,
                    raw_label: Callable[[dict], Any], work_dir: Path | None = None,
                    keep_columns: Sequence[str] = ()) -> ManifestRows:
    """Reads ``labels_csv``, checks every named image of ``dataset_dir`` (decoding it once) and
    returns the usable rows with ``raw_label(row)`` of each (it raises ``ValueError`` for a cell
    it cannot read) and the cells of ``keep_columns``. A manifest without a ``filename`` column
    (or one of ``keep_columns``), unreadable, or with no usable row is a
    :class:`~runway_cnn.errors.DataError` naming it."""
    root = Path(dataset_dir).expanduser().resolve()
    csv_path = Path(labels_csv).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a folder")
    rows = ManifestRows(root, csv_path, columns={name: [] for name in keep_columns})
    candidates: list[tuple[int, str, Any, list[str]]] = []
    seen: dict[str, int] = {}
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for column in (FILENAME, *keep_columns):
                if column not in header:
                    raise DataError(f"--labels_csv {csv_path} has no {column!r} column (its "
                                    f"columns: {', '.join(header) or 'none'})")
            for row in reader:
                line = reader.line_num
                reason, name = _row_problem(row, root, seen, line)
                if reason is None:
                    try:
                        candidates.append((line, name, raw_label(row),
                                           [row[column] for column in keep_columns]))
                        seen[name] = line
                        continue
                    except (ValueError, KeyError) as error:
                        reason = f"label: {first_line(error)}"
                rows.bad_rows.append({"line": line, "filename": row.get(FILENAME) or "",
                                      "reason": reason})
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read --labels_csv {csv_path}: {first_line(error)}") from error
    if work_dir is None:
        rows.tmpdir = tempfile.TemporaryDirectory(prefix="runway_cnn_converted_")
        work_dir = Path(rows.tmpdir.name)
    checked = check_images(root, [name for _, name, _, _ in candidates],
                           TrainDir(Path(work_dir)).converted)
    for (line, name, raw, kept), result in zip(candidates, checked):
        if result.path is None:
            rows.skipped.append({"path": name, "reason": result.reason, "line": line})
            continue
        if result.reason:
            rows.converted.append({"source": name, "path": result.path, "reason": result.reason})
        rows.sources.append(name)
        rows.paths.append(result.path)
        rows.raw_labels.append(raw)
        for column, cell in zip(keep_columns, kept):
            rows.columns[column].append(cell)
    if not rows.sources:
        raise DataError(f"--labels_csv {csv_path} names no usable image of {root} "
                        f"({len(rows.bad_rows)} bad rows, {len(rows.skipped)} unusable files; "
                        "see the data report)")
    return rows


def _row_problem(row: dict, root: Path, seen: dict[str, int], line: int
                 ) -> tuple[str | None, str]:
    """Why a row cannot be used (None if it can), and its file name relative to ``root``."""
    if None in row or any(value is None for value in row.values()):
        return "too many or too few cells for the header", ""
    name = (row.get(FILENAME) or "").strip()
    if not name:
        return "empty file name", name
    path = Path(name)
    if path.is_absolute() or not (root / path).resolve().is_relative_to(root):
        return f"{name} leaves the image folder {root}", name
    name = path.as_posix()
    if name in seen:
        return f"duplicate of line {seen[name]}", name
    if not (root / path).is_file():
        return f"no such file {root / path}", name
    return None, name
