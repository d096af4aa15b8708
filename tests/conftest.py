"""Shared fixtures: small synthetic image datasets that a CNN can learn in a few steps."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

DEFAULT_CLASSES = ("checks", "circles", "hstripes", "vstripes")
_COLOURS = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 40),
            (160, 60, 200), (40, 200, 200), (240, 130, 30), (120, 120, 120)]


@pytest.fixture(autouse=True, scope="session")
def _private_ledger(tmp_path_factory):
    """The record of the files the package wrote (``output_checks``) is the test session's
    own, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNWAY_CNN_LEDGER", str(tmp_path_factory.mktemp("ledger") / "written.json"))
        yield


def make_image(class_index: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGB image of class ``class_index``: its own colour and pattern, random phase + noise."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(10, 16)
    phase = rng.uniform(0, period)
    pattern = class_index % 4
    if pattern == 0:  # checkerboard
        mask = ((x + phase) // period + (y + phase) // period) % 2 == 0
    elif pattern == 1:  # a disc
        cx, cy, r = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h, 0.3 * min(w, h)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r ** 2
    elif pattern == 2:  # horizontal stripes
        mask = ((y + phase) // (period / 2)) % 2 == 0
    else:  # vertical stripes
        mask = ((x + phase) // (period / 2)) % 2 == 0
    colour = np.array(_COLOURS[class_index % len(_COLOURS)], np.float32)
    background = np.full(3, rng.uniform(200, 250), np.float32)
    image = np.where(mask[..., None], colour, background) * rng.uniform(0.8, 1.1)
    image += rng.normal(0, 12, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def make_image_folder(root: Path, classes: Sequence[str] | int = DEFAULT_CLASSES,
                      per_class: int = 12, size: tuple[int, int] = (48, 96), seed: int = 0,
                      splits: Sequence[str] | None = None, ext: str = ".jpg") -> Path:
    """Write ``root/<class>/<class>_<i><ext>`` (or ``root/<split>/<class>/…`` with ``splits``).

    ``classes`` are folder names or a number of classes (``class_0`` …); ``per_class`` images per
    class (per split with ``splits``), each side random in ``size`` (inclusive). Classes differ in
    colour and pattern (checks, disc, h/v stripes), with noise. Returns ``root``.
    """
    names = [f"class_{i}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split in splits or [""]:
        for index, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                wh = tuple(int(v) for v in rng.integers(size[0], size[1] + 1, 2))
                image = make_image(index, wh, rng)
                image.save(folder / f"{name}_{i:03d}{ext}", **({"quality": 90} if ext in (
                    ".jpg", ".jpeg") else {}))
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """4 classes × 12 JPEGs (48–96 px), one folder per class."""
    return make_image_folder(tmp_path / "images")


class Interrupt(Exception):
    """What :func:`killed_in_stage2` raises: a run killed mid-stage."""


def killed_in_stage2(run, monkeypatch, epoch: int = 1):
    """Runs ``run()`` with the trainer's callbacks raising :class:`Interrupt` at the end of
    stage 2's ``epoch`` (as a kill would stop it), then puts the callbacks back."""
    import keras

    from runway_cnn.training import trainer

    original = trainer.stage_callbacks

    def interrupting(stage_dir, *args):
        callbacks = original(stage_dir, *args)
        if stage_dir.name == "stage2":
            def stop(done_epoch, logs):
                if done_epoch == epoch:
                    raise Interrupt()
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=stop))
        return callbacks

    monkeypatch.setattr(trainer, "stage_callbacks", interrupting)
    try:
        with pytest.raises(Interrupt):
            run()
    finally:
        monkeypatch.setattr(trainer, "stage_callbacks", original)
