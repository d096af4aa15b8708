"""The bad-input corpus: files a careful user (or a scraper) puts in a photo folder, made by the
tests themselves (nothing is downloaded), each with the outcome every entry point must give.

Outcomes are strings: ``"used"`` (trained on as it is), ``"converted: <reason>"``, ``"skipped:
<reason>"`` for the folder scan; ``"labels"``, ``"error: <text>"`` or ``"absent"`` (not an image
file by name, left out of a folder listing) for ``predict`` and :class:`Predictor`. Reasons and
texts are matched as prefixes of the real ones.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from conftest import make_image

CLASSES = ("checks", "circles", "stripes")
BAD_CLASS = "checks"  # the corpus files go into this class folder
GOOD_PER_CLASS = 8
NOT_UTF8 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 file name, not UTF-8
LONG_NAME = "l" * 246 + ".png"  # 250 characters: its converted copy's name would be too long


@dataclass(frozen=True)
class Case:
    name: str  # file (or link) name in the class folder
    write: Callable[[Path, Path], None]  # (path, outside folder) → writes it
    scan: str
    predict: str
    raw_valid: bool | None = None  # the raw bytes to serving_per_image (None: not sent)


def _photo(size=(48, 40), seed=1) -> Image.Image:
    return make_image(0, size, np.random.default_rng(seed))


def _save(im_or_fn, fmt=None, **kwargs):
    def write(path: Path, outside: Path) -> None:
        im = im_or_fn() if callable(im_or_fn) else im_or_fn
        im.save(path, fmt, **kwargs)
    return write


def _bytes(data_fn: Callable[[], bytes]):
    return lambda path, outside: path.write_bytes(data_fn())


def _jpeg_bytes(quality=90) -> bytes:
    import io
    buffer = io.BytesIO()
    _photo().save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _write_rotated(path: Path, outside: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo((60, 30)).save(path, "JPEG", quality=95, exif=exif.tobytes())


def _write_gif(path: Path, outside: Path) -> None:
    frames = [_photo(seed=s).convert("P") for s in (1, 2)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def _write_bomb(path: Path, outside: Path) -> None:
    """A PNG whose header claims 20000 × 10000 pixels (2.2 × PIL's limit): readers must refuse
    it from the header, before decoding gigabytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    header = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(bytes(20001))) + chunk(b"IEND", b""))


def _write_heic(path: Path, outside: Path) -> None:
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))


def _link(target: Callable[[Path, Path], Path], directory: bool = False):
    def write(path: Path, outside: Path) -> None:
        path.symlink_to(target(path, outside), target_is_directory=directory)
    return write


CASES = (
    Case("truncated.jpg", _bytes(lambda: _jpeg_bytes()[:300]), "skipped: cannot decode",
         "error: cannot read", raw_valid=False),
    Case("zero.jpg", _bytes(lambda: b""), "skipped: empty file", "error: not an image",
         raw_valid=False),
    Case("text.jpg", _bytes(lambda: b"a fashion week review, not a photo"),
         "skipped: not an image", "error: not an image", raw_valid=False),
    Case("page.png", _bytes(lambda: b"<!doctype html><html><body>404</body></html>"),
         "skipped: not an image", "error: not an image", raw_valid=False),
    Case("photo.heic", _write_heic, "skipped: not an image", "error: not an image",
         raw_valid=False),
    Case("notes.txt", _bytes(lambda: b"shot at the spring show"), "skipped: not an image",
         "absent"),
    Case(".hidden.jpg", _bytes(_jpeg_bytes), "skipped: hidden file", "absent"),
    Case("bomb.png", _write_bomb, "skipped: image too large", "error: image too large"),
    Case("cmyk.jpg", _save(lambda: _photo().convert("CMYK"), "JPEG"), "converted: mode CMYK",
         "labels"),
    Case("deep16.png", _save(lambda: Image.fromarray(
        np.full((40, 48), 40000, np.uint16))), "converted: mode I;16", "labels"),
    Case("rgba.png", _save(lambda: _photo().convert("RGBA")), "converted: mode RGBA", "labels"),
    Case("palette.png", _save(lambda: _photo().convert("P")), "converted: mode P", "labels"),
    Case("anim.gif", _write_gif, "converted: format GIF", "labels"),
    Case("rotated.jpg", _write_rotated, "converted: EXIF orientation 6", "labels"),
    Case(LONG_NAME, _save(lambda: _photo().convert("RGBA")), "converted: mode RGBA", "labels"),
    Case(NOT_UTF8, _bytes(_jpeg_bytes), "used", "labels", raw_valid=True),
    Case("plain.jpg", _bytes(_jpeg_bytes), "used", "labels", raw_valid=True),
    Case("pixel.png", _save(lambda: Image.new("RGB", (1, 1), (200, 30, 30))),
         "skipped: image too small", "labels", raw_valid=True),
    Case("strip.png", _save(lambda: Image.new("RGB", (300, 1), (200, 30, 30))),
         "skipped: image too small", "labels", raw_valid=True),
    Case("escape.jpg", _link(lambda p, out: out / "elsewhere.jpg"), "skipped: outside dataset dir",
         "labels"),
    Case("dangling.jpg", _link(lambda p, out: p.parent / "gone.jpg"), "skipped: broken link",
         "error: no such file"),
    Case("loop.jpg", _link(lambda p, out: p), "skipped: link loop", "error: cannot read"),
    Case("up", _link(lambda p, out: Path(".."), directory=True),
         "skipped: link to . leads out of its class folder", "absent"),
    Case("sibling", _link(lambda p, out: Path("../circles"), directory=True),
         "skipped: link to circles leads out of its class folder", "absent"),
)


def make_corpus(root: Path) -> Path:
    """``root/photos/<class>/`` with ``GOOD_PER_CLASS`` good JPEGs each and every case of
    ``CASES`` in ``BAD_CLASS``; link targets outside the dataset go to ``root/outside/``."""
    from conftest import make_image_folder

    dataset = make_image_folder(root / "photos", CLASSES, per_class=GOOD_PER_CLASS,
                                size=(40, 72))
    outside = root / "outside"
    outside.mkdir()
    _photo().save(outside / "elsewhere.jpg", quality=90)
    for case in CASES:
        case.write(dataset / BAD_CLASS / case.name, outside)
    return dataset


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` (links not followed) → a digest of what it holds,
    to show that nothing a user gave was changed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                state[str(path)] = "link→" + os.readlink(path)
            elif path.is_file():
                state[str(path)] = hashlib.sha1(path.read_bytes()).hexdigest() + \
                    f"@{path.stat().st_mtime_ns}"
    return state


def skipped_names(cases=CASES) -> set[str]:
    return {c.name for c in cases if c.scan.startswith("skipped")}


# --- CSV manifests (round 3) ---

CSV_CLASSES = ("red", "blue")
CSV_PER_CLASS = 6


def make_csv_photos(root: Path) -> Path:
    """``root/photos/<red|blue>/<class>_<i>.jpg``, ``CSV_PER_CLASS`` small JPEGs a class, for
    manifests to name."""
    from conftest import make_image_folder

    return make_image_folder(root / "photos", CSV_CLASSES, per_class=CSV_PER_CLASS,
                             size=(36, 44))


def csv_photo_rows() -> list[list[str]]:
    """``[file name, class]`` of every photo of :func:`make_csv_photos`, in folder order."""
    return [[f"{c}/{c}_{i:03d}.jpg", c] for c in CSV_CLASSES for i in range(CSV_PER_CLASS)]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A manifest written by the csv module (cells with line breaks are quoted, as valid CSV
    has them)."""
    import csv

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
def make_records(root: Path, num_shards: int = 2, **settings) -> Path:
    """``root/records``: a dataset converted to TFRecords (``settings``: ``FinetuneConfig``
    fields; default the ``CLASSES`` folder ``root/photos``, 4 small photos a class, a quarter
    each for validation and test)."""
    from conftest import make_image_folder
    from runway_cnn.training.config import FinetuneConfig
    from runway_cnn.training.datasets import convert_dataset

    if "dataset_dir" not in settings:
        settings["dataset_dir"] = str(make_image_folder(root / "photos", CLASSES, per_class=4,
                                                        size=(24, 32)))
    config = FinetuneConfig(train_dir=str(root / "unused"), validation_fraction=0.25,
                            test_fraction=0.25, **settings)
    convert_dataset(root / "records", num_shards, config)
    return root / "records"


def edit_descriptor(records: Path, change: Callable[[dict], None]) -> Path:
    """Applies ``change`` to ``records/dataset.json`` (as a user editing it would); returns
    its path."""
    import json

    path = records / "dataset.json"
    descriptor = json.loads(path.read_text())
    change(descriptor)
    path.write_text(json.dumps(descriptor, indent=2))
    return path


def swap_labels(descriptor: dict, first: int = 0, second: int = 1) -> None:
    """Swaps two labels of a descriptor's label list (and of its task's copy of it)."""
    for labels in (descriptor["labels"], descriptor["task"].get("labels")):
        if labels is not None:
            labels[first], labels[second] = labels[second], labels[first]
