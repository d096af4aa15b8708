"""Paths as the user typed them, made absolute once."""
from __future__ import annotations

import os


def absolute_path(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute against the working directory."""
    return os.path.abspath(os.path.expanduser(path))
