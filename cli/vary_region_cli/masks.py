"""Masks for the CLI, with the standard library only: recognise an image file's real type, and
write rectangle masks as PNG (8-bit grayscale, black background, white where the image is redrawn)."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The pipeline's own checks and limits (stdlib only), so the CLI and the pipeline agree on what a mask is.
from vary_region.core.errors import JobRejected
from vary_region.submit.mask import validate_mask
from vary_region.submit.mask_file import MAX_SIDE, MIN_SIDE
from vary_region.submit.mask_regions import TOO_SMALL, parse_mask_regions

MAX_MASK_BYTES = 8 * 1024 * 1024  # APIFRAME's documented mask limit

# media type -> file extension used for inbox/<job-id>/mask.<ext>
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class MaskError(ValueError):
    """A mask (or the numbers describing one) cannot be used; the message says why."""


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Rect:
        x, y, w, h = _ints(text, 4, "X,Y,W,H")
        return cls(x, y, w, h)

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"


def region_document(rects: list[str], ellipses: list[str], polygons: list[str], units: str) -> dict[str, Any]:
    """`mask.regions` for job.json: the pipeline draws them at the parent's real size."""
    regions: list[dict[str, Any]] = [{"rect": _numbers(text, 4, "X,Y,W,H")} for text in rects]
    regions += [{"ellipse": _numbers(text, 4, "CX,CY,RX,RY")} for text in ellipses]
    for text in polygons:
        values = _numbers(text, None, "X1,Y1,X2,Y2,X3,Y3,...")
        if len(values) < 6 or len(values) % 2:
            raise MaskError(f"--polygon {text!r}: give at least three X,Y points")
        regions.append({"polygon": [values[i : i + 2] for i in range(0, len(values), 2)]})
    document = {"regions": regions, "units": units}
    try:
        parse_mask_regions(document)  # the pipeline's own check: refused here, before anything is uploaded
    except JobRejected as exc:
        hint = "; with this command: --units fraction" if exc.error.code == TOO_SMALL and units == "px" else ""
        raise MaskError(f"{exc.error.message} (the pipeline would reject the job as {exc.error.code}{hint})") from None
    return document


def _numbers(text: str, count: int | None, shape: str) -> list[float | int]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count):
        raise MaskError(f"{text!r} is not {shape}")
    return [int(v) if v.is_integer() else v for v in values]


def parse_size(text: str) -> tuple[int, int]:
    w, h = _ints(text, 2, "W,H")
    return w, h


def _ints(text: str, count: int, shape: str) -> list[int]:
    parts = [p.strip() for p in text.lower().replace("x", ",").split(",")] if count == 2 else text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise MaskError(f"{text!r} is not {shape} ({count} whole numbers separated by commas)")
    return values


def check_mask_file(data: bytes, name: str) -> str:
    """Return the mask's media type, or raise MaskError for what the pipeline would reject anyway:
    its own check (type, size, truncation, a PNG that selects nothing), run before any upload."""
    try:
        mask = validate_mask(data, None, MAX_MASK_BYTES)
    except JobRejected as exc:
        hint = "; white marks the region to redraw, on black" if exc.error.code == "MASK_BLANK" else ""
        raise MaskError(
            f"{name}: {exc.error.message} (the pipeline would reject the job as {exc.error.code}{hint})"
        ) from None
    return mask.media_type


def rectangle_mask_png(size: tuple[int, int], rects: Sequence[Rect]) -> bytes:
    """A PNG of `size` (the parent image's size): black, with every rectangle in `rects` white."""
    width, height = size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise MaskError(f"the mask size {width}x{height} is out of range: each side must be {MIN_SIDE}..{MAX_SIDE}")
    if not rects:
        raise MaskError("no rectangle given")
    for rect in rects:
        if rect.width <= 0 or rect.height <= 0:
            raise MaskError(f"the rectangle {rect} is empty: width and height must be positive")
        if rect.x < 0 or rect.y < 0 or rect.x + rect.width > width or rect.y + rect.height > height:
            raise MaskError(f"the rectangle {rect} (X,Y,W,H) does not fit in the {width}x{height} mask")
    black = bytes(width)
    rows: dict[tuple[tuple[int, int], ...], bytes] = {}  # white spans of a row -> the filtered scanline
    raw = bytearray()
    for y in range(height):
        spans = tuple(sorted({(r.x, r.x + r.width) for r in rects if r.y <= y < r.y + r.height}))
        line = rows.get(spans)
        if line is None:
            pixels = bytearray(black)
            for start, end in spans:
                pixels[start:end] = b"\xff" * (end - start)
            line = rows[spans] = b"\x00" + bytes(pixels)  # filter type 0 (None), then the row
        raw += line
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grayscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
