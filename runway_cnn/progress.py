"""A progress bar of images on stderr (stdout stays for a command's results)."""
from __future__ import annotations

import contextlib
import sys


class ImageProgress:
    """Keras' progress bar counting ``total`` images, drawn on stderr."""

    def __init__(self, total: int):
        import keras

        self._bar = keras.utils.Progbar(total, unit_name="image")

    def add(self, count: int) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self._bar.add(count)
