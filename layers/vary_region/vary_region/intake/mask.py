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
"""

from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from vary_region.errors import JobRejected

if TYPE_CHECKING:
    from PIL import Image

MIN_SIDE = 16
MAX_SIDE = 8192
THRESHOLD = 128
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"  # the empty IEND chunk and its CRC
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class MaskFit(StrEnum):
    """What to do with a mask file whose size differs from the parent image's."""

    EXACT = "exact"  # rejected: MASK_SIZE_MISMATCH
    RESIZE = "resize"  # scaled to the parent's size, then made black and white again


@dataclass(frozen=True)
class Mask:
    """A checked mask upload: its type, size and bytes (the bytes never reach logs or reprs).

    `pixels` is the upload reduced to black and white (one byte a pixel, 0 or 255), kept so that
    fitting it to the parent does not decode the file a second time.
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


def normalise_media_type(media_type: str | None) -> str | None:
    if not media_type:
        return None
    media_type = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(media_type, media_type)


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
    _check_container_end(data, media_type)
    image = _open(data, media_type)
    width, height = image.size
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        # Checked on the header alone, before a decompression bomb could allocate anything.
        raise JobRejected(
            "MASK_DIMENSIONS_INVALID", f"the mask is {width}x{height}; each side must be {MIN_SIDE}..{MAX_SIDE} pixels"
        )
    try:
        image.load()
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... for corrupt data
        raise _truncated(media_type) from None
    binary = binarise(image)
    if binary.getbbox() is None:
        raise JobRejected("MASK_BLANK", "the mask selects nothing: it has no white (painted) pixel")
    already_binary = (
        media_type == "image/png"
        and image.mode in ("L", "1")
        and "transparency" not in image.info
        and not any(image.convert("L").histogram()[1:255])
    )
    return Mask(media_type, width, height, data, pixels=binary.tobytes(), already_binary=already_binary)


def fit_mask(mask: Mask, size: tuple[int, int], fit: MaskFit = MaskFit.EXACT) -> BinaryMask:
    """The checked mask at the parent's size, strictly black and white, as the PNG to send."""
    from PIL import Image

    width, height = size
    binary = Image.frombytes("L", (mask.width, mask.height), mask.pixels or _pixels_of(mask))
    if (mask.width, mask.height) != size:
        if fit is not MaskFit.RESIZE:
            raise JobRejected(
                "MASK_SIZE_MISMATCH",
                f"the mask is {mask.width}x{mask.height} but the parent image is {width}x{height}; "
                'paint it at the parent\'s size, or set "mask_fit": "resize" to have it scaled',
            )
        # Bilinear, then the same threshold: edges land where the scaled shape's half-way line is.
        binary = threshold(binary.resize(size, Image.Resampling.BILINEAR))
        if binary.getbbox() is None:
            raise JobRejected("MASK_BLANK", f"scaled to {width}x{height}, the mask selects nothing")
        return BinaryMask(width, height, encode_png(binary))
    return BinaryMask(width, height, mask.data if mask.already_binary else encode_png(binary))


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


def sniff_media_type(data: bytes) -> str | None:
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_header_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from an image's first bytes, or None while they are not enough.

    Pillow reads PNG and JPEG headers from a prefix; its WebP reader wants the whole file, so a
    WebP's size is read from its VP8/VP8L/VP8X header (the first 30 bytes) instead.
    """
    media_type = sniff_media_type(head)
    if media_type is None:
        return None
    if media_type == "image/webp":
        return _webp_header_size(head)
    try:
        with _open_plain(head, media_type) as image:
            return image.size
    except Exception:  # not enough bytes yet (or not an image): the caller reads on, or gives up
        return None


def _open(data: bytes, media_type: str) -> Image.Image:
    try:
        return _open_plain(data, media_type)
    except Exception:
        raise _truncated(media_type) from None


def _open_plain(data: bytes, media_type: str) -> Image.Image:
    # The three plugins imported by name: Image.open would otherwise import every format Pillow has.
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

    _ = (JpegImagePlugin, PngImagePlugin, WebPImagePlugin)
    return Image.open(io.BytesIO(data), formats=[_FORMATS[media_type]])


def _pixels_of(mask: Mask) -> bytes:
    return binarise(_open(mask.data, mask.media_type)).tobytes()


def _check_container_end(data: bytes, media_type: str) -> None:
    """A file cut at its very end still decodes (decoders stop once they have every pixel), but a
    mask that lost its last bytes in transit is not the file the user made."""
    if media_type == "image/png" and not data.endswith(_PNG_END):
        raise _truncated(media_type)
    if media_type == "image/jpeg" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise _truncated(media_type)
    if media_type == "image/webp":
        (riff_size,) = struct.unpack("<I", data[4:8])
        if riff_size + 8 > len(data):
            raise _truncated(media_type)


def _truncated(media_type: str) -> JobRejected:
    kind = _FORMATS.get(media_type, "image").replace("WEBP", "WebP")
    return JobRejected("MASK_TRUNCATED", f"the {kind} mask is truncated or corrupt")


def _webp_header_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    kind = data[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None
