"""Mask checks: before any credit is spent, a mask must be a real, whole, non-empty image.

The provider's rule: black background, white where the image is redrawn. PNG masks are checked
pixel by pixel for "nothing selected"; JPEG and WebP masks are checked for type, size and truncation
(decoding them would need an imaging library in the Lambda layer).
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass, field

from vary_region.errors import JobRejected

MIN_SIDE = 16
MAX_SIDE = 8192
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_INFLATE_STEP = 1024 * 1024
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# PNG colour type -> (channels, has_alpha)
_PNG_CHANNELS = {0: (1, False), 2: (3, False), 3: (1, False), 4: (2, True), 6: (4, True)}


@dataclass(frozen=True)
class Mask:
    """A checked mask image: its type, size and bytes (the bytes never reach logs or reprs)."""

    media_type: str
    width: int
    height: int
    data: bytes = field(repr=False)  # never in logs or reprs

    def to_data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"


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
    reader = {"image/png": _png_size, "image/jpeg": _jpeg_size, "image/webp": _webp_size}[media_type]
    width, height = reader(data)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise JobRejected(
            "MASK_DIMENSIONS_INVALID", f"the mask is {width}x{height}; each side must be {MIN_SIDE}..{MAX_SIDE} pixels"
        )
    if media_type == "image/png" and _png_is_blank(data, width, height):
        raise JobRejected("MASK_BLANK", "the mask selects nothing: it has no white (non-black) pixel")
    return Mask(media_type=media_type, width=width, height=height, data=data)


def sniff_media_type(data: bytes) -> str | None:
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _truncated(kind: str) -> JobRejected:
    return JobRejected("MASK_TRUNCATED", f"the {kind} mask is truncated or corrupt")


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks: list[tuple[bytes, bytes]] = []
    offset = len(_PNG_SIGNATURE)
    while True:
        if offset + 12 > len(data):
            raise _truncated("PNG")
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise _truncated("PNG")
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : end])
        if zlib.crc32(kind + body) != crc:
            raise _truncated("PNG")
        chunks.append((kind, body))
        offset = end
        if kind == b"IEND":
            return chunks


def _png_header(data: bytes) -> tuple[int, int, int, int, int]:
    chunks = _png_chunks(data)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise _truncated("PNG")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if colour not in _PNG_CHANNELS or not any(kind == b"IDAT" for kind, _ in chunks):
        raise _truncated("PNG")
    return width, height, depth, colour, interlace


def _png_size(data: bytes) -> tuple[int, int]:
    width, height, *_ = _png_header(data)
    return width, height


def _png_is_blank(data: bytes, width: int, height: int) -> bool:
    """True when every pixel is black (or fully transparent black).

    PNG filters predict each byte from bytes of the same channel only, so a channel is zero
    everywhere exactly when its filtered bytes are zero everywhere: no unfiltering is needed.
    """
    _, _, depth, colour, interlace = _png_header(data)
    chunks = _png_chunks(data)
    channels, has_alpha = _PNG_CHANNELS[colour]
    if colour == 3:
        palette = next((body for kind, body in chunks if kind == b"PLTE"), b"")
        # Only when index 0 is the single black entry does "all indexes zero" mean "all black".
        black = [i for i in range(len(palette) // 3) if palette[i * 3 : i * 3 + 3] == b"\0\0\0"]
        if black != [0]:
            return False
    bits_per_pixel = channels * depth
    pixel_bytes = max(1, bits_per_pixel // 8)
    colour_bytes = pixel_bytes * (channels - 1) // channels if has_alpha else pixel_bytes
    rows: list[int] = []  # byte length of each scanline, in stream order
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    for x0, y0, dx, dy in passes:
        pass_width = (width - x0 + dx - 1) // dx if width > x0 else 0
        pass_height = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pass_width:
            rows.extend([(pass_width * bits_per_pixel + 7) // 8] * pass_height)
    inflater = zlib.decompressobj()
    pending = bytearray()
    start = 0  # consumed prefix of `pending`; dropped in bulk so large masks stay linear in time
    stream = (body for kind, body in chunks if kind == b"IDAT")
    compressed = b""
    for row_length in rows:
        while len(pending) - start < row_length + 1:
            if not compressed:
                compressed = next(stream, b"")
                if not compressed:
                    raise _truncated("PNG")
            if start > len(pending) // 2:
                del pending[:start]
                start = 0
            # Bounded output: a tiny file must not inflate into hundreds of megabytes at once.
            pending += inflater.decompress(compressed, _INFLATE_STEP)
            compressed = inflater.unconsumed_tail
        row = bytes(pending[start + 1 : start + 1 + row_length])
        start += row_length + 1
        for channel_byte in range(colour_bytes):
            if row[channel_byte::pixel_bytes].strip(b"\0"):
                return False
    return True


def _jpeg_size(data: bytes) -> tuple[int, int]:
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise _truncated("JPEG")
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise _truncated("JPEG")
        marker = data[offset + 1]
        if marker == 0xFF:
            offset += 1
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if offset + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        offset += 2 + length
    raise _truncated("JPEG")


def _webp_size(data: bytes) -> tuple[int, int]:
    (riff_size,) = struct.unpack("<I", data[4:8])
    if riff_size + 8 > len(data) or len(data) < 30:
        raise _truncated("WebP")
    kind = data[12:16]
    if kind == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise _truncated("WebP")
