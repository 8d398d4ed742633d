"""A mask file before its pixels are read: its real format, its size from the header, whether it
arrived whole, and what decoding it would take.

Every check here reads the file's bytes or its header only, so a mask that is not an image, was cut
in transit, or would not fit in the submit function's memory is refused before anything is decoded.

Memory: the submit function has 512 MB. Decoding is the one full-size step that cannot be avoided
(Pillow keeps 1, 2 or 4 bytes a pixel by mode; progressive and multi-scan JPEGs also hold their
coefficients, WebP's decoder three more copies), so what a mask's form would take decoded is
estimated from its header and capped (`MAX_DECODED_BYTES`, else `MASK_TOO_LARGE`) before anything is
decoded. `make bench` measures the peak of every form at its largest (bench/mask_memory.py).

Pillow is imported inside the functions that open an image: the handlers' import (their cold start)
never loads it.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

from vary_region.core.errors import JobRejected

if TYPE_CHECKING:
    from PIL import Image

MIN_SIDE = 16
MAX_SIDE = 8192
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"  # the empty IEND chunk and its CRC
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
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


def normalise_media_type(media_type: str | None) -> str | None:
    if not media_type:
        return None
    media_type = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(media_type, media_type)


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


def check_container_end(data: bytes, media_type: str) -> None:
    """A file cut at its very end still decodes (decoders stop once they have every pixel), but a
    mask that lost its last bytes in transit is not the file the user made."""
    if media_type == "image/png" and not data.endswith(_PNG_END):
        raise truncated(media_type)
    if media_type == "image/jpeg" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise truncated(media_type)
    if media_type == "image/webp":
        (riff_size,) = struct.unpack("<I", data[4:8])
        if riff_size + 8 > len(data):
            raise truncated(media_type)


def open_image(data: bytes, media_type: str) -> Image.Image:
    """The file opened (its header read, no pixel decoded), or MASK_TRUNCATED."""
    try:
        return _open_plain(data, media_type)
    except Exception:
        raise truncated(media_type) from None


def truncated(media_type: str) -> JobRejected:
    kind = _FORMATS.get(media_type, "image").replace("WEBP", "WebP")
    return JobRejected("MASK_TRUNCATED", f"the {kind} mask is truncated or corrupt")


def decoded_bytes_per_pixel(image: Image.Image, media_type: str) -> float:
    """What decoding this opened (not loaded) mask takes at its peak, per pixel, from its header."""
    per_pixel = float(_BYTES_PER_PIXEL.get(image.mode, 4))
    if media_type == "image/webp":
        return per_pixel * _WEBP_COPIES
    if media_type == "image/jpeg":
        return per_pixel + _JPEG_COEFFICIENT_BYTES * _jpeg_components_per_pixel(image)
    return per_pixel


def check_decoded_size(image: Image.Image, media_type: str) -> None:
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


def _open_plain(data: bytes, media_type: str) -> Image.Image:
    # The three plugins imported by name: Image.open would otherwise import every format Pillow has.
    from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

    _ = (JpegImagePlugin, PngImagePlugin, WebPImagePlugin)
    return Image.open(io.BytesIO(data), formats=[_FORMATS[media_type]])


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
