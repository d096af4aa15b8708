"""Errors a user can cause. The CLIs print them as one line (no traceback) and exit with status 2."""
from __future__ import annotations

import unicodedata
import warnings

MAX_LINE = 500  # characters of an error line; the rest is cut (a 100 kB file name …)


class RunwayError(Exception):
    """Base of every user-facing error; its message names the file, folder or flag at fault."""


class DataError(RunwayError):
    """A dataset folder or image file that cannot be used."""


class BackboneError(RunwayError):
    """A backbone name, TF-Hub handle or weights file that cannot be loaded."""


class CheckpointError(RunwayError):
    """A missing or unreadable checkpoint / train dir / export."""


class UnknownNameError(RunwayError, LookupError):
    """A name that is not in a registry."""


class RunwayDeprecationWarning(FutureWarning):
    """An older flag or keyword that still works, with the spelling to use instead. A
    ``FutureWarning``, shown by default (a ``DeprecationWarning`` is hidden outside
    ``__main__``); the CLIs print it as one ``warning:`` line per run
    (:func:`runway_cnn.cli.run`)."""


# each message once in a process, wherever it is raised (after the user's own filters: ``-W
# error`` still makes it an error)
warnings.filterwarnings("once", category=RunwayDeprecationWarning, append=True)


def deprecated(old: str, new: str, stacklevel: int = 2) -> None:
    """Warns that ``old`` is deprecated for ``new`` (``stacklevel`` as for ``warnings.warn``,
    counted from the caller of this function)."""
    warnings.warn(f"{old} is deprecated: use {new}", RunwayDeprecationWarning,
                  stacklevel=stacklevel + 1)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (TensorFlow's run to many), or its type name."""
    text = str(getattr(error, "message", "") or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` as one line (line breaks made spaces) of at most ``limit`` characters, cut with
    an ellipsis."""
    text = " ".join(str(text).splitlines())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def control_character(text: str) -> str | None:
    """The first control character of ``text`` (line breaks, tabs, NUL …) as ``U+000A``, or
    None: labels with one break the one-label-a-line files (``labels.txt``, TSVs)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None
