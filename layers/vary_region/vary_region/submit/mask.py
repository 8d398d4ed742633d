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

Memory: the submit function has 512 MB. Decoding is the one full-size step that cannot be avoided
(Pillow keeps 1, 2 or 4 bytes a pixel by mode; progressive and multi-scan JPEGs also hold their
coefficients, WebP's decoder three more copies), so what a mask's form would take decoded is
estimated from its header and capped (`MAX_DECODED_BYTES`, else `MASK_TOO_LARGE`) before anything is
decoded. Everything after is done in strips of rows or on one bit a pixel: the black-and-white
result is kept packed (8 MB at 8192x8192), never as a full-size copy per colour band.
`make bench` measures the peak of every form at its largest (bench/mask_memory.py).
"""

from __future__ import annotations

import base64
import io
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from vary_region.core.errors import JobRejected

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
# What one decoded pixel takes in Pillow, by mode (every mode not named: 4 bytes, "RGB" included).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# The decode's peak, measured in bench/mask_memory.py, beside the image itself: libwebp's decoder
# holds two canvases and hands Pillow a third copy; a JPEG's coefficients (2 bytes each, 64 per 8x8
# block of each component) are held whole when it has several scans (progressive, or a sequential
# file with more than one: the header does not say, so every JPEG is counted as if it had).
_WEBP_COPIES = 4
_JPEG_COEFFICIENT_BYTES = 2
# At most this much decoded: with the Python runtime and the layer's imports (about 45 MB), the
# file's bytes (8 MB) and the step's own buffers, a mask's peak stays near half of the submit
# function's 512 MB. 8192x8192 fits in grey, palette, 1-bit and 16-bit grey PNG and grey JPEG.
MAX_DECODED_BYTES = 192 * 1024 * 1024
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
    _check_decoded_size(image, media_type)
    try:
        image.load()
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... for corrupt data
        raise _truncated(media_type) from None
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


def decoded_bytes_per_pixel(image: Image.Image, media_type: str) -> float:
    """What decoding this opened (not loaded) mask takes at its peak, per pixel, from its header."""
    per_pixel = float(_BYTES_PER_PIXEL.get(image.mode, 4))
    if media_type == "image/webp":
        return per_pixel * _WEBP_COPIES
    if media_type == "image/jpeg":
        return per_pixel + _JPEG_COEFFICIENT_BYTES * _jpeg_components_per_pixel(image)
    return per_pixel


def _check_decoded_size(image: Image.Image, media_type: str) -> None:
    """MASK_TOO_LARGE when decoding the file would take more than MAX_DECODED_BYTES (from the header)."""
    width, height = image.size
    per_pixel = decoded_bytes_per_pixel(image, media_type)
    needed = width * height * per_pixel
    if needed > MAX_DECODED_BYTES:
        largest = int(MAX_DECODED_BYTES / per_pixel)
        side = min(MAX_SIDE, int(largest**0.5))
        raise JobRejected(
            "MASK_TOO_LARGE",
            f"the mask is {width}x{height} ({image.mode} {_FORMATS[media_type].replace('WEBP', 'WebP')}): "
            f"decoding it takes {needed / 2**20:.1f} MiB, over the {MAX_DECODED_BYTES / 2**20:.0f} MiB a mask may "
            f"take; in this form at most {largest / 1e6:.1f} megapixels (say {side}x{side}). "
            "A grey, palette or 1-bit PNG may be 8192x8192",
        )


def _jpeg_components_per_pixel(image: Image.Image) -> float:
    """Samples a pixel of this JPEG stores, all components together (subsampled ones count less)."""
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
    most = max(h for _, h, _, _ in layers) * max(v for _, _, v, _ in layers)
    return sum(h * v for _, h, v, _ in layers) / most


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
    image = _open(mask.data, mask.media_type)
    image.load()
    return _packed_binary(image)[0]


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
