"""Mask checks: before any credit is spent, a mask must be a real, whole image that selects something.

The provider's rule: black background, white where the image is redrawn. Every format (PNG, JPEG,
WebP) is decoded with Pillow and reduced to strictly black and white before anything is decided:

- a pixel is white when its brightest colour channel, weighted by its opacity, is at least 128.
  Grey and anti-aliased edges are thus cut at half strength, a JPEG's ringing disappears, and a
  pure red or blue stroke counts as painted, as a person painting "this part" means it;
- transparency: a transparent pixel is kept (black), whatever colour it hides; only painted pixels,
  at least half opaque and half bright, are redrawn. A mask drawn on a transparent layer therefore
  works as drawn, and a fully transparent mask selects nothing (`MASK_BLANK`).

What is sent to APIFRAME is always that black-and-white image as a PNG at the parent's size
(`BinaryMask`), never the upload itself.

Pillow is imported inside the functions that decode, draw or resize: the handlers' import (their cold
start) never loads it, and the completion, webhook and reconciler functions never need it.

The file itself (its format, header, whether it is whole, what decoding it takes) is checked in
`mask_file.py`, before anything is decoded. Everything after the decode is done in strips of rows or
on one bit a pixel: the black-and-white result is kept packed (8 MB at 8192x8192), never as a
full-size copy per colour band. `make bench` measures the peak of every form at its largest
(bench/mask_memory.py).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from vary_region.core.errors import JobRejected
from vary_region.submit.mask_file import (
    MAX_SIDE,
    MIN_SIDE,
    check_container_end,
    check_decoded_size,
    normalise_media_type,
    open_image,
    sniff_media_type,
    truncated,
)

if TYPE_CHECKING:
    from PIL import Image

THRESHOLD = 128
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# Binarised this many pixels at a time: a strip's copies and bands are a few MB, not the image's size.
_STRIP_PIXELS = 1 << 20


class MaskFit(StrEnum):
    """What to do with a mask file whose size differs from the parent image's."""

    EXACT = "exact"  # rejected: MASK_SIZE_MISMATCH
    RESIZE = "resize"  # scaled to the parent's size, then made black and white again


@dataclass(frozen=True)
class Mask:
    """A checked mask upload: its type, size and bytes (the bytes never reach logs or reprs).

    `pixels` is the upload reduced to black and white, one bit a pixel (Pillow's mode "1" packing,
    each row whole bytes), kept so that fitting it to the parent does not decode the file again.
    """

    media_type: str
    width: int
    height: int
    data: bytes = field(repr=False)  # never in logs or reprs
    pixels: bytes = field(default=b"", repr=False, compare=False)
    # A greyscale PNG of 0 and 255 only is already what APIFRAME gets: sent as uploaded, byte for byte.
    already_binary: bool = field(default=False, compare=False)

    def to_data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class BinaryMask:
    """The mask exactly as sent: a PNG of 0 and 255 only, at the parent image's size."""

    width: int
    height: int
    data: bytes = field(repr=False)  # never in logs or reprs

    media_type = "image/png"

    def to_data_url(self) -> str:
        return f"data:image/png;base64,{base64.b64encode(self.data).decode('ascii')}"


def validate_mask(data: bytes, declared_type: str | None, max_bytes: int) -> Mask:
    """Return the checked mask, or raise JobRejected with the reason."""
    if not data:
        raise JobRejected("MASK_EMPTY", "the mask file is empty")
    if len(data) > max_bytes:
        raise JobRejected("MASK_TOO_LARGE", f"the mask is {len(data)} bytes; the limit is {max_bytes}")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise JobRejected("MASK_NOT_IMAGE", "the mask is not a PNG, JPEG or WebP image")
    declared = normalise_media_type(declared_type)
    if declared and declared.startswith("image/") and declared != media_type:
        raise JobRejected("MASK_TYPE_MISMATCH", f"the mask is declared as {declared} but its content is {media_type}")
    check_container_end(data, media_type)
    image = open_image(data, media_type)
    width, height = image.size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        # Checked on the header alone, before a decompression bomb could allocate anything.
        raise JobRejected(
            "MASK_DIMENSIONS_INVALID", f"the mask is {width}x{height}; each side must be {MIN_SIDE}..{MAX_SIDE} pixels"
        )
    check_decoded_size(image, media_type)
    try:
        image.load()
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... for corrupt data
        raise truncated(media_type) from None
    pixels, selects_something = _packed_binary(image)
    if not selects_something:
        raise JobRejected("MASK_BLANK", "the mask selects nothing: it has no white (painted) pixel")
    already_binary = (
        media_type == "image/png"
        and image.mode in ("L", "1")
        and "transparency" not in image.info
        # Mode "1" holds 0 and 255 only; an "L" image's histogram is read without a copy.
        and (image.mode == "1" or not any(image.histogram()[1:255]))
    )
    return Mask(media_type, width, height, data, pixels=pixels, already_binary=already_binary)


def fit_mask(mask: Mask, size: tuple[int, int], fit: MaskFit = MaskFit.EXACT) -> BinaryMask:
    """The checked mask at the parent's size, strictly black and white, as the PNG to send."""
    from PIL import Image

    width, height = size
    if (mask.width, mask.height) != size:
        if fit is not MaskFit.RESIZE:
            raise JobRejected(
                "MASK_SIZE_MISMATCH",
                f"the mask is {mask.width}x{mask.height} but the parent image is {width}x{height}; "
                'paint it at the parent\'s size, or set "mask_fit": "resize" to have it scaled',
            )
        check_parent_size(size)
        # Bilinear, then the same threshold: edges land where the scaled shape's half-way line is.
        # Each full-size image is dropped as soon as the next exists: at most two at a time.
        scaled = _unpacked(mask).resize(size, Image.Resampling.BILINEAR)
        binary = threshold(scaled)
        del scaled
        if binary.getbbox() is None:
            raise JobRejected("MASK_BLANK", f"scaled to {width}x{height}, the mask selects nothing")
        return BinaryMask(width, height, encode_png(binary))
    if mask.already_binary:  # sent as uploaded: nothing to decode or encode
        return BinaryMask(width, height, mask.data)
    return BinaryMask(width, height, encode_png(_unpacked(mask)))


def check_parent_size(size: tuple[int, int]) -> None:
    """A mask drawn or scaled to the parent's size is a mask like any other: at most MAX_SIDE a side
    (the parent's size comes from its header, which nothing else bounds)."""
    width, height = size
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise JobRejected(
            "MASK_DIMENSIONS_INVALID",
            f"the parent image is {width}x{height}; a mask at its size would be over {MAX_SIDE} pixels a side",
        )


def _unpacked(mask: Mask) -> Image.Image:
    """The black-and-white pixels as one byte a pixel ("L", 0 and 255), what the PNG is made of."""
    from PIL import Image

    bits = Image.frombytes("1", (mask.width, mask.height), mask.pixels or _pixels_of(mask))
    return bits.convert("L")


def _packed_binary(image: Image.Image) -> tuple[bytes, bool]:
    """The image binarised strip by strip, one bit a pixel (never a full-size copy of it), and
    whether any pixel is white."""
    from PIL import Image

    width, height = image.size
    rows = max(1, _STRIP_PIXELS // width)
    strips = []
    white = False
    for top in range(0, height, rows):
        strip = binarise(image.crop((0, top, width, min(height, top + rows))))
        white = white or strip.getbbox() is not None
        strips.append(strip.convert("1", dither=Image.Dither.NONE).tobytes())
    return b"".join(strips), white


def binarise(image: Image.Image) -> Image.Image:
    """One-byte black (0) and white (255) pixels by the rule in the module docstring."""
    from PIL import ImageChops

    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if image.mode in _SIXTEEN_BIT:
        # Pillow's "L" conversion clips 16-bit samples instead of scaling them.
        value = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    elif image.mode in ("L", "1") and not has_alpha:
        value = image.convert("L")
    else:
        colour = image.convert("RGBA" if has_alpha else "RGB")
        red, green, blue = colour.split()[:3]
        value = ImageChops.lighter(ImageChops.lighter(red, green), blue)
        if has_alpha:
            value = ImageChops.multiply(value, colour.getchannel("A"))
    return threshold(value)


def threshold(grey: Image.Image) -> Image.Image:
    return grey.point([0] * THRESHOLD + [255] * (256 - THRESHOLD))


def encode_png(binary: Image.Image) -> bytes:
    out = io.BytesIO()
    # Level 1: a black-and-white mask compresses well at once; higher levels cost time, not bytes.
    binary.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _pixels_of(mask: Mask) -> bytes:
    image = open_image(mask.data, mask.media_type)
    image.load()
    return _packed_binary(image)[0]
