"""The page's painted mask made into exactly what the pipeline wants: a PNG at the parent's natural
size, strictly black and white (white = redraw), never blank.

The page exports its mask canvas at the natural size, but a canvas anti-aliases every stroke's edge
(grey pixels) and its PNG carries an alpha channel: whatever the browser sent is decoded, scaled to
the natural size if it is not, and cut at half strength here, so no grey pixel reaches the bucket.
"""

from __future__ import annotations

import base64
import binascii
import io

THRESHOLD = 128  # the pipeline's own cut (vary_region.submit.mask): half strength is white
DATA_URL_PREFIX = "data:image/png;base64,"
MAX_DATA_URL_CHARS = 48 * 1024 * 1024


class MaskRefused(ValueError):
    """The page's mask cannot be used; code and message go back to the page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_data_url(value: object) -> bytes:
    if not isinstance(value, str) or not value.startswith(DATA_URL_PREFIX):
        raise MaskRefused("MASK_MISSING", "the page sent no mask (a PNG data URL)")
    if len(value) > MAX_DATA_URL_CHARS:
        raise MaskRefused("MASK_TOO_LARGE", "the mask the page sent is too large")
    try:
        return base64.b64decode(value[len(DATA_URL_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise MaskRefused("MASK_UNREADABLE", "the mask the page sent is not base64") from None


def strict_mask_png(painted: bytes, size: tuple[int, int]) -> bytes:
    """An 8-bit grayscale PNG of `size` holding only 0 and 255; MaskRefused if it selects nothing."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(painted)) as decoded:
            decoded.load()
            picture = decoded.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError):
        raise MaskRefused("MASK_UNREADABLE", "the mask the page sent is not a PNG") from None
    # Transparent means not painted: laid on black, as the pipeline reads a transparent mask.
    flat = Image.alpha_composite(Image.new("RGBA", picture.size, (0, 0, 0, 255)), picture).convert("L")
    if flat.size != size:
        flat = flat.resize(size, Image.Resampling.BILINEAR)
    mask = flat.point(lambda value: 255 if value >= THRESHOLD else 0)
    if mask.getbbox() is None:
        raise MaskRefused(
            "MASK_BLANK", "the mask is empty: paint the region to redraw (white) before submitting or saving"
        )
    out = io.BytesIO()
    mask.save(out, format="PNG", optimize=True)
    return out.getvalue()
