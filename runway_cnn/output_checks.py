"""Checks of the output paths given on the command line, made before any work starts: a folder
or file to write may not sit under a file, and a command writes into a folder only when it is
new, empty or the command's own earlier output (:func:`check_own_output`)."""
from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Callable

from runway_cnn.errors import RunwayError


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


def check_own_output(path: str | os.PathLike, descriptor: str,
                     format: str | Callable[[Path], bool], names: tuple[str, ...],
                     overwrite: bool = False, flag: str = "--output",
                     concurrent: tuple[str, ...] = ()) -> None:
    """An output folder (given as ``flag``) a command writes its files ``names`` (shell
    patterns allowed: ``("*",)`` any) into: new, empty, or its own earlier output (its file
    ``descriptor`` a JSON object whose ``format`` is ``format``, or passing the test
    ``format``; beside it nothing but ``names`` and its killed writes' hidden temporary files).
    Any other folder holds files the command did not write, and is refused (one line naming
    ``flag``, the folder and some of the files) unless ``overwrite``. Names matching
    ``concurrent`` (what the command's other processes may be writing there now) never count."""
    path = Path(path)
    if overwrite or not path.is_dir():
        return
    leftovers = tuple(f".{name}." for name in (descriptor, *names))  # write_json's, np.save's
    present = sorted(p.name for p in path.iterdir()
                     if not (p.name.startswith(leftovers) and ".tmp" in p.name)
                     and not any(fnmatch.fnmatchcase(p.name, c) for c in concurrent))
    if not present:
        return
    try:
        own = bool(format(path / descriptor) if callable(format) else
                   json.loads((path / descriptor).read_text()).get("format") == format)
    except (OSError, ValueError, TypeError, AttributeError):  # missing, not JSON, no object
        own = False
    foreign = [name for name in present if not own or not any(
        fnmatch.fnmatchcase(name, pattern) for pattern in names)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise RunwayError(f"{flag} {path} holds files this command did not write ({shown}); "
                          "give a new or empty folder, or --overwrite to write into it anyway")


def has_keys(*keys: str) -> Callable[[Path], bool]:
    """A test of a JSON file for :func:`check_own_output`: an object with ``keys``."""
    return lambda path: set(keys) <= json.loads(path.read_text()).keys()


def _check_parents(path: Path, flag: str) -> None:
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunwayError(f"{flag} {path}: {parent} is a file, not a folder")
            return
