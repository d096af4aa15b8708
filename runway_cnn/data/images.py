"""Image checks and conversion, shared by every data source: each file is decoded once; unusable
files are skipped with a reason, and images ``tf.io.decode_image`` would read wrongly (not 8-bit
RGB, EXIF-rotated, GIF, WEBP, TIFF …) are converted to RGB PNG copies. User files are never
modified."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps

from runway_cnn.errors import DataError

_ORIENTATION = 0x0112  # EXIF tag
_AS_IS_FORMATS = {"JPEG", "MPO", "PNG", "BMP"}  # read by tf.io.decode_image when 8-bit RGB
_AS_IS_BMP_RAWMODES = {"BGR", "BGRX"}  # 24- and 32-bit uncompressed BMP
MIN_IMAGE_SIDE = 8  # pixels; smaller images (spacer GIFs, 1×N strips) are skipped
_MAX_CONVERTED_NAME = 255 - 24  # NAME_MAX less the temporary copy's ".<name>.<pid>.tmp"


class CheckedImage(NamedTuple):
    source: str  # relative to the root
    path: str | None  # what tf reads; None when unusable
    reason: str  # why skipped / converted; "" for a file used as it is


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Make PIL raise on truncated images while scanning (restores the caller's setting)."""
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_images(root: Path, sources: list[str], converted_dir: Path) -> list[CheckedImage]:
    """:func:`check_image` of every source (relative to ``root``), in order, decoded in a thread
    pool (PIL releases the GIL)."""
    workers = min(8, max(2, usable_cores()))
    with strict_decoding(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda source: check_image(root, source, converted_dir), sources))


def check_image(root: Path, source: str, converted_dir: Path) -> CheckedImage:
    """Decode one file fully; convert it when tf.io.decode_image would not read it as RGB."""
    path = root / source
    try:
        if path.stat().st_size == 0:
            return CheckedImage(source, None, "empty file")
        with Image.open(path) as im:
            why, size = conversion_reason(im), im.size
            if not why and im.format in ("JPEG", "MPO"):
                im.draft("RGB", (im.width // 8, im.height // 8))  # still decodes every block
            im.load()
    except Image.UnidentifiedImageError:
        return CheckedImage(source, None, "not an image")
    except Image.DecompressionBombError as e:
        return CheckedImage(source, None, f"image too large: {e}")
    except Exception as e:  # noqa: BLE001 - any decoder failure makes the file unusable
        return CheckedImage(source, None, f"cannot decode: {type(e).__name__}: {e}")
    if min(size) < MIN_IMAGE_SIDE:
        return CheckedImage(source, None, f"image too small ({size[0]}×{size[1]} px; a side under "
                                      f"{MIN_IMAGE_SIDE} px is no photo to learn from)")
    if not why:
        return CheckedImage(source, str(path), "")
    target = _converted_path(converted_dir, source)
    try:
        _convert(path, target)
    except Exception as e:  # noqa: BLE001
        return CheckedImage(source, None, f"cannot convert ({why}): {type(e).__name__}: {e}")
    return CheckedImage(source, str(target), why)


def _converted_path(converted_dir: Path, source: str) -> Path:
    """``converted/<source>.png``; a name too long for the file system with the suffix and the
    temporary name's additions (Linux: 255 bytes) becomes a digest of the source."""
    name = f"{Path(source).name}.png"
    if len(os.fsencode(name)) > _MAX_CONVERTED_NAME:
        name = hashlib.sha1(os.fsencode(source)).hexdigest()[:20] + ".png"
    return converted_dir / Path(source).parent / name


def conversion_reason(im: Image.Image) -> str:
    """Why tf.io.decode_image(channels=3) would read this image wrongly; "" when it is fine."""
    if im.format not in _AS_IS_FORMATS:
        return f"format {im.format}"
    if im.mode != "RGB":
        return f"mode {im.mode}"
    raw = _rawmode(im)
    if im.format == "PNG" and raw != "RGB":
        return f"PNG raw mode {raw}"  # 16-bit
    if im.format == "BMP" and raw not in _AS_IS_BMP_RAWMODES:
        return f"BMP raw mode {raw}"
    orientation = _orientation(im)
    if isinstance(orientation, int) and 2 <= orientation <= 8:
        return f"EXIF orientation {orientation}"
    return ""


def _rawmode(im: Image.Image) -> str | None:
    if not getattr(im, "tile", None):
        return None
    args = im.tile[0][3]
    return args[0] if isinstance(args, tuple) else args


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - broken EXIF: treat as unrotated
        return None


def _convert(source: Path, target: Path) -> None:
    """Write an 8-bit RGB PNG of the first frame, EXIF orientation applied.

    The copy gets the source's mtime; a copy with the same mtime is reused (a rerun in the same
    ``work_dir``)."""
    mtime = source.stat().st_mtime_ns
    if target.exists() and target.stat().st_mtime_ns == mtime:
        return
    with Image.open(source) as im:
        im.seek(0)
        rgb = to_rgb(ImageOps.exif_transpose(im))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    rgb.save(tmp, "PNG", compress_level=1)
    os.utime(tmp, ns=(mtime, mtime))
    os.replace(tmp, target)


def encoded_as_trained(source: str | os.PathLike | bytes) -> bytes:
    """An image file's (or encoded image's) bytes as training reads them: the bytes themselves
    when ``tf.io.decode_image`` reads them right, else a PNG of their RGB conversion (EXIF
    orientation applied, transparency on white, 16-bit rescaled, first frame). Bytes PIL cannot
    read are returned as they are, so the caller's decoder reports them. A decompression bomb is
    a :class:`DataError` (decoding it would take gigabytes)."""
    raw = bytes(source) if isinstance(source, (bytes, bytearray)) else None
    name = "image" if raw is not None else str(source)
    try:
        with strict_decoding(), Image.open(io.BytesIO(raw) if raw is not None else source) as im:
            if not conversion_reason(im):
                return raw if raw is not None else Path(source).read_bytes()
            im.seek(0)
            rgb = to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as error:
        raise DataError(f"{name}: image too large ({error})") from error
    except (OSError, ValueError):
        return raw if raw is not None else Path(source).read_bytes()
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB; 16/32-bit integer and float greyscale rescaled, transparency put on white."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I"):
            a = a / 257.0  # 16-bit range
        elif a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")
