"""A grid stage's result given as its grid alone (v2's older one-URL `result`): its four images cut from it.

Midjourney's grid is a 2x2 composite of the four variants, each one quarter of it (1 top left, 2 top
right, 3 bottom left, 4 bottom right: the order the upscale's `index` counts in). The grid is copied
like any result image (the image-size limit applies to its bytes); its quarters are then cut from the
stored copy and stored as PNG under the keys four copied images would have.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from vary_region.aws.job_files import JobFiles
from vary_region.completion.image_copier import CopiedImage

MIN_GRID_SIDE = 16
# The decoded grid at most (Pillow holds 4 bytes a pixel for RGB(A), CMYK and 32-bit modes, fewer
# for the rest): with the file's bytes (MAX_IMAGE_BYTES), one quarter at a time and its PNG, the cut
# stays well inside the completion function's memory. A Midjourney grid is about 2048x2048 (16 MiB).
MAX_GRID_DECODED_BYTES = 256 * 1024 * 1024
_BYTES_PER_PIXEL = 4
_FORMATS = ["PNG", "JPEG", "WEBP"]
# The modes PNG stores as they are; any other quarter is stored as RGB (or RGBA if it has alpha).
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})
VARIANTS = ("1", "2", "3", "4")


class GridNotCut(ValueError):
    """The stored grid is no image that can be cut into four (not an image, too small or too large)."""


def cut_grid(files: JobFiles, grid: CopiedImage, key_for: Callable[[str], str], max_bytes: int) -> list[CopiedImage]:
    """The grid's four quarters, stored under key_for("1".."4"), one at a time."""
    stored = files.read(grid.key, max_bytes)
    if stored is None or stored.data is None:
        raise GridNotCut("the copied grid is no longer in the bucket, or larger than the image-size limit")
    image = _open(stored.data)
    width, height = image.size
    left, top = width // 2, height // 2
    boxes = ((0, 0, left, top), (left, 0, width, top), (0, top, left, height), (left, top, width, height))
    quarters = []
    for name, box in zip(VARIANTS, boxes, strict=True):
        data = _png(image.crop(box))
        key = key_for(name)
        files.write_bytes(key, data, "image/png")
        quarters.append(CopiedImage(name, key, grid.source_url, len(data), "image/png"))
    return quarters


def _open(data: bytes) -> Any:
    # The three plugins imported by name (Image.open would import every format Pillow has), and only
    # here: the completion function imports Pillow only when a grid is cut.
    from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError, WebPImagePlugin

    _ = (JpegImagePlugin, PngImagePlugin, WebPImagePlugin)
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)  # reads the header only
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise GridNotCut(f"the grid is not a PNG, JPEG or WebP image ({type(exc).__name__})") from None
    width, height = image.size
    if min(width, height) < MIN_GRID_SIDE:
        raise GridNotCut(f"the grid is {width}x{height}, too small to hold four images")
    if width * height * _BYTES_PER_PIXEL > MAX_GRID_DECODED_BYTES:
        raise GridNotCut(f"the grid is {width}x{height}, too large to decode")
    try:
        image.load()
    except (OSError, ValueError) as exc:  # a truncated or corrupt body behind a valid header
        raise GridNotCut(f"the grid could not be decoded ({type(exc).__name__})") from None
    return image


def _png(quarter: Any) -> bytes:
    if quarter.mode not in _PNG_MODES:
        quarter = quarter.convert("RGBA" if "A" in quarter.getbands() else "RGB")
    out = io.BytesIO()
    quarter.save(out, format="PNG")
    return out.getvalue()
