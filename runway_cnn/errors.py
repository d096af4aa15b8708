"""Errors a user can cause. The CLIs print them as one line (no traceback) and exit with status 2."""


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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (TensorFlow's run to many), or its type name."""
    text = str(getattr(error, "message", "") or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
