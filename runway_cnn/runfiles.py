"""The files a run writes. JSON files (config, splits, data report, stage markers, metrics,
summaries) are written atomically, so a killed process never leaves half a file, and read with a
one-line error that names the damaged file and says what to do. Output paths given on the command
line are checked before any work starts."""
from __future__ import annotations

import json
import os
from pathlib import Path

from runway_cnn.errors import CheckpointError, RunwayError, first_line


def write_json(path: str | os.PathLike, value, indent: int = 1) -> None:
    """Writes ``value`` to ``path`` through a temporary file and one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=indent) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike, fix: str, required: bool = True) -> dict:
    """The JSON object in ``path``; ``{}`` for a missing file unless ``required``. A missing
    (required), unreadable or damaged file is a :class:`CheckpointError` ending in ``fix``."""
    path = Path(path)
    if not path.exists():
        if required:
            raise CheckpointError(f"{path} not found; {fix}")
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is damaged ({first_line(error)}); {fix}") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is damaged (a JSON {type(value).__name__}, not an "
                              f"object); {fix}")
    return value


def check_output_dir(path: str | os.PathLike | None, flag: str) -> None:
    """A folder to write into: it may exist as a folder or not yet, but neither it nor a parent
    may be a file."""
    if path is not None:
        _check_parents(Path(path), flag)
        if Path(path).exists() and not Path(path).is_dir():
            raise RunwayError(f"{flag} {path} is a file; give a folder")


def check_output_file(path: str | os.PathLike | None, flag: str) -> None:
    """A file to write: it may exist as a file or not yet; it may not be a folder, nor sit
    under a file."""
    if path is not None:
        _check_parents(Path(path), flag)
        if Path(path).is_dir():
            raise RunwayError(f"{flag} {path} is a folder; give a file name")


def _check_parents(path: Path, flag: str) -> None:
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunwayError(f"{flag} {path}: {parent} is a file, not a folder")
            return
