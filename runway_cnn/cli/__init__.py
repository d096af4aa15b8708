"""Shared CLI plumbing: flags generated from a config dataclass, and one-line user errors.

A command is the module ``python -m`` runs: ``runway_cnn/<command>.py`` (argparse and ``main``,
run under :func:`run`; it imports the library inside ``main``, so a Ctrl-C while TensorFlow
imports is one line too); the three named like a package are its ``__main__``
(``export/__main__.py``, ``audit/__main__.py``, ``app/__main__.py``)."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import warnings
from typing import Callable

from runway_cnn.errors import RunwayDeprecationWarning, RunwayError, one_line


def flag_type(f: dataclasses.Field) -> type:
    """The argparse type of a dataclass field's flag, from its annotation: int, float or str."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    return {"int": int, "float": float}.get(kind.split()[0], str)


def add_dataclass_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--flag`` per field, typed from its default, with the field's ``help`` metadata
    (fields marked ``flag: False`` have none; fields marked ``deprecated: True``, older
    spellings that still work, are left out of ``--help``)."""
    for f in config_cls.fields():
        meta = dict(f.metadata)
        if not meta.pop("flag", True):
            continue
        kwargs = {"help": meta.pop("help", ""), "default": f.default}
        if meta.get("deprecated"):
            kwargs["help"] = argparse.SUPPRESS
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = flag_type(f)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        if meta.get("required"):
            kwargs["required"] = True
            kwargs.pop("default")
        parser.add_argument(f"--{f.name}", **kwargs)


def numbers_as_values(argv: list[str]) -> list[str]:
    """``--flag -inf`` as ``--flag=-inf``: argparse takes a value that starts with '-' and is
    not a plain negative number (``-inf``, ``-1e9``) for an unknown flag and says the flag has
    no value; joined to its flag, it reaches the setting's own check (one line naming it)."""
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] \
                and token.startswith("-") and _is_number(token):
            joined[-1] += f"={token}"
        else:
            joined.append(token)
    return joined


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def add_task_option_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per option of every registered task (the fields of its ``options_class``),
    in a group per task. A flag that is not given is left out of the parsed arguments, so the
    run sees only what the user set (and an option of another task is an error there). An
    option two tasks share (``--loss``) is one flag whose choices each task checks."""
    from runway_cnn.tasks import TASKS

    seen: dict[str, tuple[argparse.Action, list[str]]] = {}
    for name in TASKS:
        group = parser.add_argument_group(f"--task {name} options")
        for f in TASKS.get(name).options_class.fields():
            meta = dict(f.metadata)
            text = meta.get("help", "") + ("" if f.default is None else
                                           f" (default: {f.default})")
            if f.name in seen:
                action, helps = seen[f.name]
                helps.append(text)
                action.help, action.choices = "; ".join(helps), None
                continue
            action = group.add_argument(
                f"--{f.name}", default=argparse.SUPPRESS, help=text, choices=meta.get("choices"),
                type=flag_type(f))
            seen[f.name] = (action, [text])


_ACCESS_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def run(main: Callable[[], object]) -> None:
    """Runs a CLI's main; a user error prints one line (no traceback, cut to ``MAX_LINE``
    characters) and exits with status 2; a Ctrl-C prints one line (the interrupt's own text,
    ``finetune``'s saying how to resume, else ``interrupted``) and exits with status 130. A
    deprecated flag prints one ``warning:`` line, once in the run. A file that cannot be
    written (no permission, a read-only or full disk) is one line naming it, status 2."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", RunwayDeprecationWarning)  # each run: its own once
        warnings.showwarning = _one_line_deprecations(warnings.showwarning)
        try:
            main()
        except RunwayError as error:
            print(one_line(f"error: {error}"), file=sys.stderr)
            sys.exit(2)
        except OSError as error:
            if error.errno not in _ACCESS_ERRORS:
                raise
            # a folder made read-only or a disk that filled up after the checks: one line
            print(one_line(f"error: {error.filename or 'a file'}: {error.strerror}; give an "
                           "output folder you can write to (with room)"), file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as interrupt:
            print(one_line(str(interrupt) or "interrupted"), file=sys.stderr)
            sys.exit(130)


def _one_line_deprecations(show: Callable) -> Callable:
    """``warnings.showwarning`` printing a :class:`RunwayDeprecationWarning` as one
    ``warning:`` line on stderr, each message once (no file, line or source: the user typed a
    flag, not the code), and every other warning as ``show`` does."""
    seen: set[str] = set()

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, RunwayDeprecationWarning):
            return show(message, category, filename, lineno, file, line)
        if str(message) not in seen:
            seen.add(str(message))
            print(one_line(f"warning: {message}"), file=sys.stderr)
    return showwarning
