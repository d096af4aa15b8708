"""Shared CLI plumbing: flags generated from a config dataclass, and one-line user errors."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from runway_cnn.errors import RunwayError, one_line


def add_dataclass_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """One ``--flag`` per field, typed from its default, with the field's ``help`` metadata."""
    for f in config_cls.fields():
        meta = dict(f.metadata)
        kwargs = {"help": meta.pop("help", ""), "default": f.default}
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        if kind.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float}.get(kind.split()[0], str)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        if meta.get("required"):
            kwargs["required"] = True
            kwargs.pop("default")
        parser.add_argument(f"--{f.name}", **kwargs)


def run(main: Callable[[], object]) -> None:
    """Runs a CLI's main; a user error prints one line (no traceback, cut to ``MAX_LINE``
    characters) and exits with status 2."""
    try:
        main()
    except RunwayError as error:
        print(one_line(f"error: {error}"), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
