"""The one rule for what a command may write, checked on resolved paths before any work:

- an output is never inside an input folder, never one of the input files, and an output folder
  never holds an input (:func:`check_outside_inputs`);
- a folder to write into is new, empty or the command's own earlier output
  (:func:`check_own_output`); a file to write is new or one this package wrote and nobody
  changed since (:func:`check_output_file`, :func:`record_written`), unless ``--overwrite``;
- an output is writable, and neither it nor a parent is a file where a folder is wanted;
- hidden system files (``.DS_Store``, ``Thumbs.db`` …) are nobody's work: they never make a
  folder the user's (:func:`is_nobodys_work`).

What this package wrote is recorded at write (:func:`record_written`: size, modification time
and SHA-256 in a ledger, ``~/.cache/runway_cnn/written.json``), so a file it wrote and the user
edited since counts as the user's."""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from runway_cnn.errors import RunwayError

# (flag, path) of what a command reads: folders and files; None where a flag was not given
Inputs = Iterable[tuple[str, "str | os.PathLike | None"]]
# what operating systems and file browsers leave in folders; never the user's work
SYSTEM_FILES = (".DS_Store", "._*", "Thumbs.db", "ehthumbs.db", "desktop.ini", ".directory",
                ".localized", ".Spotlight-V100", ".Trashes", ".fseventsd")
WRITE_PROBE = ".runway_cnn-write-test-"  # + a random part: a writability probe, gone at once
LEDGER_VAR, DEFAULT_LEDGER = "RUNWAY_CNN_LEDGER", "~/.cache/runway_cnn/written.json"


def is_nobodys_work(name: str) -> bool:
    """Whether ``name`` is a file that makes no folder anybody's: one an operating system or
    file browser leaves in folders, or a writability probe of this package's (another
    process's, gone at once)."""
    return name.startswith(WRITE_PROBE) or any(fnmatch.fnmatchcase(name, pattern)
                                               for pattern in SYSTEM_FILES)


def check_outside_inputs(path: str | os.PathLike | None, flag: str, inputs: Inputs,
                         may_hold: bool = False) -> None:
    """An output (file or folder) may not be an input, sit inside an input folder, or (a
    folder, unless ``may_hold``: it is written only in named places) hold an input: resolved
    paths, so links and ``..`` cannot hide it. One line naming both flags."""
    if path is None:
        return
    out = _resolved(path)
    for input_flag, given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        if out == source:
            raise RunwayError(f"{flag} {path} is {input_flag} {given} itself; the command "
                              f"never writes over what it reads: give another {flag}")
        if out.is_relative_to(source):
            raise RunwayError(f"{flag} {path} is inside {input_flag} {given}, which the command "
                              f"reads (later runs would read its outputs as data); give a "
                              f"{flag} outside it")
        if source.is_relative_to(out) and not may_hold:
            raise RunwayError(f"{flag} {path} holds {input_flag} {given}, which the command "
                              f"reads; give a {flag} that holds none of its inputs")


def check_output_dir(path: str | os.PathLike | None, flag: str, inputs: Inputs = (),
                     may_hold: bool = False) -> None:
    """A folder to write into: it may exist as a folder or not yet, but neither it nor a parent
    may be a file; it is writable and outside every input (:func:`check_outside_inputs`)."""
    if path is not None:
        _check_parents(Path(path), flag)
        if Path(path).exists() and not Path(path).is_dir():
            raise RunwayError(f"{flag} {path} is a file; give a folder")
        check_outside_inputs(path, flag, inputs, may_hold)
        _check_writable(Path(path), flag)


def check_output_file(path: str | os.PathLike | None, flag: str, inputs: Inputs = (),
                      overwrite: bool = False) -> None:
    """A file to write: not a folder, not under a file, outside every input, in a writable
    folder; an existing file must be one this package wrote and nobody changed since
    (:func:`written_by_us`), unless ``overwrite``."""
    if path is None:
        return
    _check_parents(Path(path), flag)
    if Path(path).is_dir():
        raise RunwayError(f"{flag} {path} is a folder; give a file name")
    check_outside_inputs(path, flag, inputs)
    if Path(path).exists() and not overwrite and not written_by_us(path):
        raise RunwayError(f"{flag} {path} exists and this package did not write it (or it was "
                          "changed since); give a new file name, or --overwrite to replace it")
    _check_writable(Path(path).parent, flag)


def check_own_output(path: str | os.PathLike, descriptor: str,
                     format: str | Callable[[Path], bool], names: tuple[str, ...],
                     overwrite: bool = False, flag: str = "--output",
                     concurrent: tuple[str, ...] = ()) -> None:
    """An output folder (given as ``flag``) a command writes its files ``names`` (shell
    patterns allowed: ``("*",)`` any) into: new, empty, or its own earlier output (its file
    ``descriptor`` a JSON object whose ``format`` is ``format``, or passing the test
    ``format``; beside it nothing but ``names`` and its killed writes' hidden temporary files).
    Any other folder holds files the command did not write, and is refused (one line naming
    ``flag``, the folder and some of the files) unless ``overwrite``; so is an own file the
    user changed since it was written (:func:`record_written`). Names matching ``concurrent``
    (what the command's other processes may be writing there now), another process's
    writability probe and system files (:func:`is_nobodys_work`) never count."""
    path = Path(path)
    if overwrite or not path.is_dir():
        return
    leftovers = tuple(f".{name}." for name in (descriptor, *names))  # write_json's, np.save's
    present = sorted(p.name for p in path.iterdir()
                     if not (p.name.startswith(leftovers) and ".tmp" in p.name)
                     and not is_nobodys_work(p.name)
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
    ledger = _read_ledger()
    edited = [name for name in present if _changed(path / name, ledger)]
    if foreign or edited:
        raise RunwayError(f"{flag} {path} holds files this command " + (
            f"did not write ({_some(foreign)})" if foreign else
            f"wrote and that were changed since, so they are yours now ({_some(edited)})")
            + "; give a new or empty folder, or --overwrite to write into it anyway")


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def has_keys(*keys: str) -> Callable[[Path], bool]:
    """A test of a JSON file for :func:`check_own_output`: an object with ``keys``."""
    return lambda path: set(keys) <= json.loads(path.read_text()).keys()


# --- what this package wrote ----------------------------------------------------------------
def ledger_path() -> Path:
    """The record of the files this package wrote: ``$RUNWAY_CNN_LEDGER``, or
    ``~/.cache/runway_cnn/written.json``."""
    return Path(os.path.expanduser(os.environ.get(LEDGER_VAR) or DEFAULT_LEDGER))


def record_written(*paths: str | os.PathLike) -> None:
    """Records files this package just wrote (size, modification time, SHA-256), so a later
    command may write them again while they are unchanged. Records of files that are gone are
    dropped. Best effort: a ledger that cannot be written leaves the files counted as the
    user's (a later command asks for ``--overwrite``)."""
    with contextlib.suppress(OSError), _locked_ledger() as ledger:
        for path in paths:
            ledger[str(_resolved(path))] = _fingerprint(Path(path))
        for name in [name for name in ledger if not os.path.isfile(name)]:
            del ledger[name]


def written_by_us(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file this package wrote and nobody changed since."""
    record = _read_ledger().get(str(_resolved(path)))
    return record is not None and _same(Path(path), record)


def _changed(path: Path, ledger: dict) -> bool:
    """Whether ``path`` is a file this package wrote (in ``ledger``) and that was changed
    since; a file it has no record of is not."""
    record = ledger.get(str(_resolved(path)))
    return record is not None and path.is_file() and not _same(path, record)


def _fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}


def _same(path: Path, record: dict) -> bool:
    try:
        stat = path.stat()
        return (stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns")
                and _sha256(path) == record.get("sha256"))
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_ledger() -> dict:
    try:
        value = json.loads(ledger_path().read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@contextlib.contextmanager
def _locked_ledger():
    """The ledger to update, under an exclusive lock (concurrent commands lose no record),
    written back atomically."""
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        with contextlib.suppress(ImportError):
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        ledger = _read_ledger()
        yield ledger
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ledger))
        os.replace(tmp, path)


# --- paths ----------------------------------------------------------------------------------
def _resolved(path: str | os.PathLike) -> Path:
    """``path`` absolute with ``~`` expanded and every link and ``..`` resolved (a link loop
    is a one-line error)."""
    try:
        return Path(os.path.expanduser(path)).resolve()
    except RuntimeError:  # a symlink loop (Python < 3.13)
        raise RunwayError(f"{path} is a symbolic link loop; give a real folder") from None


def _check_parents(path: Path, flag: str) -> None:
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise RunwayError(f"{flag} {path} is a symbolic link loop; give a real folder "
                                  "or file") from None
        raise RunwayError(f"{flag} {path} is a broken symbolic link (to {os.readlink(path)}); "
                          "give a real folder or file, or make the link's target")
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunwayError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def _check_writable(path: Path, flag: str) -> None:
    """The nearest existing folder of ``path`` takes a new file (tried: permission bits say
    nothing to root, and a read-only mount or an immutable folder refuses root too)."""
    folder = next((p for p in (Path(os.path.abspath(path)), *Path(os.path.abspath(path)).parents)
                   if p.is_dir()), None)
    if folder is None:
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=WRITE_PROBE, dir=folder)
    except OSError as error:
        raise RunwayError(f"{flag} {path}: cannot write in {folder} ({error.strerror}); give a "
                          "folder you can write to") from None
    os.close(fd)
    os.unlink(probe)
