"""JSON files written atomically (a temporary file and one rename: a killed process never leaves
half a file) and read with a one-line error that names the damaged file and says what to do."""
from __future__ import annotations

import json
import os
from pathlib import Path

from runway_cnn.errors import CheckpointError, first_line


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
