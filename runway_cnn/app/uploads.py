"""A photo as it enters the web app: the request body read with a size cap (the multipart field
``file`` or the raw body), its content type checked, and the image checked before anyone decodes
it (pixel count from the header, then a full decode that catches truncated files). Every problem
is a :class:`~runway_cnn.errors.DataError` saying what was wrong, which the app answers with 400.
Nothing is written to disk: the multipart parser's parts go to memory, the body never exceeds the
cap."""
from __future__ import annotations

import io
from typing import AsyncIterator

from PIL import Image, UnidentifiedImageError

from runway_cnn.data.images import strict_decoding
from runway_cnn.errors import DataError, first_line

FIELD = "file"  # the multipart field holding the photo
ACCEPTED_TYPES = ("image/", "application/octet-stream")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and small fields around the photo


def _check_type(content_type: str, where: str) -> None:
    if content_type and not content_type.lower().startswith(ACCEPTED_TYPES):
        raise DataError(f"{where} has content type {content_type}; send an image (image/jpeg, "
                        "image/png, … or application/octet-stream)")


def _too_large(max_bytes: int) -> DataError:
    return DataError(f"the upload is larger than the limit of {max_bytes / 2 ** 20:g} MB "
                     "(--max_mb)")


async def _capped(chunks: AsyncIterator[bytes], cap: int, max_bytes: int
                  ) -> AsyncIterator[bytes]:
    """``chunks`` passed on until more than ``cap`` bytes came: then a 'too large' error."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise _too_large(max_bytes)
        yield chunk


async def read_upload(headers, chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The photo's bytes from a request's ``headers`` and body ``chunks``: the multipart field
    ``file`` for ``multipart/form-data``, else the whole body (any ``image/*`` or
    ``application/octet-stream`` type, or none). At most ``max_bytes`` (plus the multipart
    overhead) are ever read: a larger declared ``Content-Length`` is refused unread."""
    from python_multipart.multipart import parse_options_header

    content_type, params = parse_options_header(headers.get("content-type"))
    content_type = content_type.decode("latin-1")
    multipart = content_type == "multipart/form-data"
    cap = max_bytes + (MULTIPART_OVERHEAD if multipart else 0)
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise _too_large(max_bytes)
    body = _capped(chunks, cap, max_bytes)
    if multipart:
        return await _multipart_field(body, params.get(b"boundary"), max_bytes)
    _check_type(content_type, "the request body")
    data = b"".join([chunk async for chunk in body])
    if not data:
        raise DataError("empty upload: the request body holds no image")
    return data


async def _multipart_field(body: AsyncIterator[bytes], boundary: bytes | None,
                           max_bytes: int) -> bytes:
    """The ``file`` part of a multipart body, kept in memory (other parts are dropped)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    if not boundary:
        raise DataError("multipart/form-data without a boundary")
    parts: list[dict] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header[0].decode("latin-1").lower()] = header[1].decode("latin-1")
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if _field_name(parts[-1]) == FIELD:
            parts[-1]["data"] += data[start:end]
            if len(parts[-1]["data"]) > max_bytes:
                raise _too_large(max_bytes)

    def _field_name(part: dict) -> str | None:
        _, options = parse_options_header(part["headers"].get("content-disposition"))
        name = options.get(b"name")
        return name.decode("utf-8", "replace") if name is not None else None

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data})
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise DataError(f"malformed multipart body: {first_line(error)}") from None
    files = [p for p in parts if _field_name(p) == FIELD]
    if not files:
        raise DataError(f"no multipart field {FIELD!r}: send the photo as the field "
                        f"'{FIELD}' (or as the raw request body)")
    _check_type(files[0]["headers"].get("content-type", ""), f"the field {FIELD!r}")
    if not files[0]["data"]:
        raise DataError(f"empty upload: the field {FIELD!r} holds no image")
    return bytes(files[0]["data"])


def check_image(data: bytes, max_pixels: int) -> None:
    """A :class:`DataError` unless ``data`` is an image PIL reads whole with at most
    ``max_pixels`` pixels (counted from the header, before decoding; PIL's own bomb limit,
    ``Image.MAX_IMAGE_PIXELS``, applies as well)."""
    too_many = f"more than the limit of {max_pixels:,} pixels (--max_pixels)"
    try:
        with strict_decoding(), Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise DataError(f"image of {width}×{height} pixels: {too_many}")
            im.load()
    except UnidentifiedImageError:
        raise DataError("not an image (JPEG, PNG, GIF, BMP, WebP or TIFF expected)") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{first_line(error)}: {too_many}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError("the image cannot be decoded (truncated or damaged?): "
                        f"{first_line(error)}") from None
