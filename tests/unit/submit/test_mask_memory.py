"""A mask the rules allow never takes the submit function near its memory (issue #23, finding 9).

An out-of-memory stop loses the whole SQS batch: five receives, the DLQ, and a misleading
JOB_INCOMPLETE a day later. So what a mask would take decoded is judged from its header, before
anything is decoded (MASK_TOO_LARGE), and the largest mask that passes is measured in a subprocess
that does what the submit function does, against template.yaml's MemorySize
(tests/packaging/test_mask_memory_probe.py). `make bench` measures every form (bench/mask_memory.py);
that test checks the one the issue names.

The header tests use a small real file whose header claims a large size: the check answers before
any pixel is read, and a file it lets through fails later as MASK_TRUNCATED (its data is short).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable

import pytest
from PIL import Image
from vary_region.core.errors import JobError, JobRejected
from vary_region.submit import mask as mask_module
from vary_region.submit.mask import MaskFit, binarise, fit_mask, validate_mask
from vary_region.submit.mask_file import MAX_DECODED_BYTES
from vary_region.submit.mask_regions import parse_mask_regions, render_regions

from tests.support.builders import mask_png

MAX = 8 * 1024 * 1024
LARGEST_COLOUR_SIDE = math.isqrt(MAX_DECODED_BYTES // 4)  # Pillow keeps 4 bytes a colour pixel


def rejection(check: Callable[[], object]) -> JobError | None:
    """The rejection `check` raised, None when it passed: a missed rejection fails on an assertion."""
    try:
        check()
    except JobRejected as rejected:
        return rejected.error
    return None


def code_of(data: bytes) -> str | None:
    error = rejection(lambda: validate_mask(data, None, MAX))
    return error.code if error else None


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(mode: str, size: tuple[int, int]) -> bytes:
    """A 16x16 PNG whose IHDR (CRC and all) says `size`."""
    data = saved(Image.new(mode, (16, 16), 0), "PNG")
    body = struct.pack(">II", *size) + data[24:29]  # width, height; then depth, colour type...
    ihdr = struct.pack(">I", 13) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return data[:8] + ihdr + data[33:]


def jpeg_claiming(mode: str, size: tuple[int, int], **options) -> bytes:
    """A 16x16 JPEG whose frame header (SOF0 or SOF2) says `size`."""
    data = bytearray(saved(Image.new(mode, (16, 16), 0), "JPEG", **options))
    start = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    data[start + 5 : start + 9] = struct.pack(">HH", size[1], size[0])
    return bytes(data)


def webp_claiming(size: tuple[int, int]) -> bytes:
    """A 16x16 lossless WebP whose VP8L header says `size`."""
    data = bytearray(saved(Image.new("RGBA", (16, 16), 0), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L"
    bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    data[21:25] = (bits | (size[0] - 1) | ((size[1] - 1) << 14)).to_bytes(4, "little")
    return bytes(data)


# --- judged from the header, before anything is decoded --------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "LA"])
def test_given_a_colour_png_of_8192x8192_when_validated_then_mask_too_large_naming_the_largest_allowed(mode):
    error = rejection(lambda: validate_mask(png_claiming(mode, (8192, 8192)), None, MAX))

    assert error is not None and error.code == "MASK_TOO_LARGE", error
    message = error.message
    assert "8192x8192" in message and f"{LARGEST_COLOUR_SIDE}x{LARGEST_COLOUR_SIDE}" in message
    assert "grey, palette or 1-bit PNG may be 8192x8192" in message


def test_given_a_colour_png_at_the_largest_allowed_side_when_validated_then_it_is_decoded():
    assert code_of(png_claiming("RGBA", (LARGEST_COLOUR_SIDE, LARGEST_COLOUR_SIDE))) == "MASK_TRUNCATED"
    assert code_of(png_claiming("RGBA", (LARGEST_COLOUR_SIDE + 1, LARGEST_COLOUR_SIDE))) == "MASK_TOO_LARGE"


@pytest.mark.parametrize("mode", ["L", "1", "P", "I;16"])
def test_given_a_grey_bilevel_palette_or_16bit_png_of_8192x8192_when_validated_then_its_size_is_allowed(mode):
    assert code_of(png_claiming(mode, (8192, 8192))) == "MASK_TRUNCATED"


def test_given_a_colour_jpeg_whose_coefficients_would_not_fit_when_validated_then_mask_too_large():
    # 6000x6000 RGB is 137 MiB as an image; a JPEG may also hold its coefficients whole (+103 MiB at 4:2:0).
    assert code_of(jpeg_claiming("RGB", (6000, 6000))) == "MASK_TOO_LARGE"


def test_given_a_webp_of_4096x4096_when_validated_then_mask_too_large_for_its_decoders_copies():
    # 64 MiB as an image, but libwebp holds two canvases and hands Pillow a third copy.
    assert code_of(webp_claiming((4096, 4096))) == "MASK_TOO_LARGE"


def test_given_a_parent_over_8192_a_side_when_regions_are_drawn_or_a_mask_resized_then_mask_dimensions_invalid():
    regions = parse_mask_regions({"regions": [{"rect": [0.1, 0.1, 0.5, 0.5]}], "units": "fraction"})
    mask = validate_mask(mask_png((64, 64), (8, 8, 32, 32)), None, MAX)

    drawn = rejection(lambda: render_regions(regions, (8193, 16)))
    resized = rejection(lambda: fit_mask(mask, (16, 8193), MaskFit.RESIZE))

    for error in (drawn, resized):
        assert error is not None and error.code == "MASK_DIMENSIONS_INVALID", error
        assert "8193" in error.message and "8192" in error.message


# --- binarised in strips: the same pixels as the whole image at once ----------------------------------

SIZE = (37, 19)  # an odd width: each packed row ends in a part-filled byte


def noise(seed: int) -> Image.Image:
    """Grey values spread around the threshold (128), different for each seed."""
    return Image.effect_noise(SIZE, 90).rotate(seed * 90, expand=False).point(lambda v: (v + seed * 37) % 256)


def grey16(seed: int) -> Image.Image:
    return noise(seed).convert("I").point(lambda v: v * 257 + seed).convert("I;16")


FILES = {
    "rgba-png": lambda: saved(Image.merge("RGBA", [noise(i) for i in range(4)]), "PNG"),
    "rgb-png": lambda: saved(Image.merge("RGB", [noise(i) for i in range(3)]), "PNG"),
    "grey-alpha-png": lambda: saved(Image.merge("LA", [noise(0), noise(1)]), "PNG"),
    "grey-png": lambda: saved(noise(0), "PNG"),
    "grey-png-transparency": lambda: saved(noise(0), "PNG", transparency=200),
    "bilevel-png": lambda: saved(noise(0).convert("1"), "PNG"),
    "16-bit-grey-png": lambda: saved(grey16(0), "PNG"),
    "palette-png": lambda: saved(Image.merge("RGB", [noise(i) for i in range(3)]).quantize(64), "PNG"),
    "palette-png-transparency": lambda: saved(
        Image.merge("RGB", [noise(i) for i in range(3)]).quantize(64), "PNG", transparency=3
    ),
    "jpeg": lambda: saved(Image.merge("RGB", [noise(i) for i in range(3)]), "JPEG"),
    "cmyk-jpeg": lambda: saved(Image.merge("CMYK", [noise(i) for i in range(4)]), "JPEG"),
    "webp-alpha": lambda: saved(Image.merge("RGBA", [noise(i) for i in range(4)]), "WEBP", lossless=True),
}


@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("name", FILES)
def test_given_a_mask_binarised_in_strips_when_fitted_then_it_has_the_pixels_of_the_whole_image_binarised(
    name, rows, monkeypatch
):
    data = FILES[name]()
    whole = Image.open(io.BytesIO(data))
    whole.load()
    expected = binarise(whole).tobytes()  # the rule applied to the whole image at once
    assert 0 < expected.count(255) < len(expected), "the sample must have both black and white pixels"
    monkeypatch.setattr(mask_module, "_STRIP_PIXELS", rows * SIZE[0])

    sent = fit_mask(validate_mask(data, None, MAX), SIZE)

    assert Image.open(io.BytesIO(sent.data)).convert("L").tobytes() == expected
