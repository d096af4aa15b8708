"""CSV manifests: ``--labels_csv`` names the images of ``--dataset_dir`` (a ``filename`` column,
paths relative to the folder) and their labels (the task's columns: ``label``, ``labels`` …).

Every row is accounted for: a row that cannot be used (empty or duplicate file name, a path that
leaves the image folder, a file that does not exist, a label cell the task cannot read, a row
with too few or too many cells) is a *bad row* in the data report with its line number and
reason; a file that exists but is no usable image is *skipped* with the reason, as in a folder
scan, and odd images are converted the same way. Two rows naming one file (however spelled:
``./a.jpg``, ``red/../a.jpg``, a link to it) are a duplicate; so is a file name too long for the
file system. A header naming a column twice (up to spaces and case) or lacking the task's column
is a one-line error naming the columns; a manifest with no usable row writes its report first.
"""
from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from runway_cnn.data.dataset import ImageDataset
from runway_cnn.data.images import check_images
from runway_cnn.errors import DataError, first_line, one_line
from runway_cnn.json_io import write_json
from runway_cnn.train_dir import TrainDir

FILENAME = "filename"
SHOWN = 200  # characters of a file name kept in a bad row's report entry and reason


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

    def unusable(self) -> list[dict]:
        """The bad rows (as ``labels.csv:LINE`` entries) and unusable files, for the report."""
        return [{"path": f"{self.csv_path.name}:{r['line']}",
                 "reason": f"bad row ({r['filename']}): {r['reason']}"}
                for r in self.bad_rows] + list(self.skipped)


def scan_labels_csv(dataset_dir: str | os.PathLike, labels_csv: str | os.PathLike,
                    raw_label: Callable[[dict], Any], work_dir: Path | None = None, *,
                    columns: Sequence[str] = (), task: str = "",
                    report_path: Path | None = None,
                    keep_columns: Sequence[str] = ()) -> ManifestRows:
    """Reads ``labels_csv``, checks every named image of ``dataset_dir`` (decoding it once) and
    returns the usable rows with ``raw_label(row)`` of each (it raises ``ValueError`` for a cell
    it cannot read) and their cells of ``keep_columns`` (``rows.columns``). A manifest without a
    ``filename`` column, the task's ``columns`` or ``keep_columns``, with an ambiguous header,
    unreadable, or with no usable row is a :class:`~runway_cnn.errors.DataError` naming it; in
    the last case the report of every row is written to ``report_path`` first (when given)."""
    root = Path(dataset_dir).expanduser().resolve()
    csv_path = Path(labels_csv).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a folder")
    rows = ManifestRows(root, csv_path, columns={name: [] for name in keep_columns})
    candidates: list[tuple[int, str, Any, list[str]]] = []
    seen: dict[Path, int] = {}
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            _check_header(csv_path, header, [FILENAME, *columns], task)
            for column in keep_columns:
                if column not in header:
                    raise DataError(f"--labels_csv {csv_path} has no {column!r} column (--group_by"
                                    f" column:{column}; its columns: {', '.join(header)})")
            end = reader.line_num
            for row in reader:  # a row's line is where it starts (a quoted cell may span lines)
                line, end = end + 1, reader.line_num
                reason, name = _row_problem(row, root, seen, line)
                if reason is None:
                    try:
                        candidates.append((line, name, raw_label(row),
                                           [row[column] for column in keep_columns]))
                        seen[_real(root, name)] = line
                        continue
                    except (ValueError, KeyError) as error:
                        reason = f"label: {first_line(error)}"
                rows.bad_rows.append({"line": line, "reason": reason,
                                      "filename": _short(row.get(FILENAME) or "")})
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
        _no_usable_row(rows, report_path)
    return rows


def _check_header(csv_path: Path, header: list[str], wanted: list[str], task: str) -> None:
    """The header must name each column once (names equal up to surrounding spaces and case
    are one name twice) and have every ``wanted`` column, spelled exactly."""
    shown = ", ".join(repr(name) for name in header) or "none"
    names: dict[str, str] = {}
    for name in header:
        key = name.strip().casefold()
        if key and key in names:
            raise DataError(f"--labels_csv {csv_path}: its header names the column "
                            f"{names[key]!r} twice ({name!r}); which one holds the data is "
                            f"ambiguous, rename or remove one (its columns: {shown})")
        names[key] = name
    for column in wanted:
        if column in header:
            continue
        near = names.get(column.casefold())
        hint = f"; rename its column {near!r} to {column!r}" if near is not None else ""
        needed = f" for --task {task}" if task and column != FILENAME else ""
        raise DataError(f"--labels_csv {csv_path} has no {column!r} column{needed} (its "
                        f"columns: {shown}){hint}")


def _no_usable_row(rows: ManifestRows, report_path: Path | None) -> None:
    """The error of a manifest without one usable row, after writing its report."""
    where = ""
    if report_path is not None:
        report = ImageDataset(rows.root, [], {}, rows.unusable(), rows.converted,
                              split_settings={"layout": "labels csv"},
                              notes={"labels_csv": str(rows.csv_path),
                                     "bad_rows": len(rows.bad_rows)}).report()
        write_json(report_path, report)
        where = f"; each is listed in {report_path}"
    first = rows.bad_rows[0] if rows.bad_rows else rows.skipped[0] if rows.skipped else None
    example = "" if first is None else (f" (first: line {first['line']}: "
                                        f"{one_line(first['reason'], 120)})")
    raise DataError(f"--labels_csv {rows.csv_path} names no usable image of {rows.root}: "
                    f"{len(rows.bad_rows)} bad rows, {len(rows.skipped)} unusable files"
                    f"{example}{where}")


def _row_problem(row: dict, root: Path, seen: dict[Path, int], line: int
                 ) -> tuple[str | None, str]:
    """Why a row cannot be used (None if it can), and its file name relative to ``root``;
    ``seen`` maps the real files of earlier rows to their lines."""
    if None in row or any(value is None for value in row.values()):
        return "too many or too few cells for the header", ""
    name = (row.get(FILENAME) or "").strip()
    if not name:
        return "empty file name", name
    path = Path(name)
    try:
        if path.is_absolute() or not _real(root, name).is_relative_to(root):
            return f"{_short(name)} leaves the image folder {root}", name
        name = path.as_posix()
        if _real(root, name) in seen:
            return f"duplicate of line {seen[_real(root, name)]}", name
        if not (root / path).is_file():
            return f"no such file {root / _short(name)}", name
    except (OSError, RuntimeError) as error:  # a name too long, a link loop (Python < 3.13)
        return f"cannot use the file name: {getattr(error, 'strerror', None) or error}", name
    return None, name


def _real(root: Path, name: str) -> Path:
    """The file a row's name leads to, links and ``..`` resolved."""
    return (root / name).resolve()


def _short(name: str) -> str:
    return one_line(name, SHOWN)
