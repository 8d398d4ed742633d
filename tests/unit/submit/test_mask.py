"""Mask checks: real, whole, sanely sized images that select something, before any credit is spent."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image
from vary_region.core.errors import JobRejected
from vary_region.submit.job_spec import parse_mask_data_url
from vary_region.submit.mask import validate_mask

from tests.support.builders import mask_image, mask_png

MAX = 8 * 1024 * 1024
SIZE = (37, 19)  # odd sizes exercise partial Adam7 passes and sub-byte rows
SMALL = (128, 128)


def code_of(data: bytes, declared: str | None = None, max_bytes: int = MAX) -> str:
    with pytest.raises(JobRejected) as info:
        validate_mask(data, declared, max_bytes)
    return info.value.error.code


def save(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- a small PNG encoder, for what Pillow cannot write (interlacing, 16-bit RGB, chosen filters) ----

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PILLOW_MODE = {(0, 16): "I;16", (2, 8): "RGB", (6, 8): "RGBA", (0, 8): "L", (4, 8): "LA"}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter(row: bytes, prior: bytes, bpp: int, kind: int) -> bytes:
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
        out.append((x - predictor) & 0xFF)
    return bytes([kind]) + bytes(out)


def encode_png(
    pixels: dict[tuple[int, int], tuple[int, ...]],
    size: tuple[int, int],
    colour_type: int,
    depth: int = 8,
    *,
    interlace: bool = False,
    filters: tuple[int, ...] = (0, 1, 2, 3, 4),
    background: tuple[int, ...] | None = None,
    palette: bytes | None = None,
    idat_split: int = 0,
) -> bytes:
    """Encode a PNG whose pixels are `background` except those in `pixels` (samples as ints)."""
    width, height = size
    channels = _CHANNELS[colour_type]
    background = background or (0,) * channels
    bpp = max(1, channels * depth // 8)

    def row_bytes(y: int, xs: range) -> bytes:
        samples = [s for x in xs for s in pixels.get((x, y), background)]
        if depth == 16:
            return b"".join(struct.pack(">H", s) for s in samples)
        if depth == 8:
            return bytes(samples)
        bits = "".join(format(s, f"0{depth}b") for s in samples)
        bits += "0" * (-len(bits) % 8)
        return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))

    raw = bytearray()
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    row_index = 0
    for x0, y0, dx, dy in passes:
        xs = range(x0, width, dx)
        if not xs:
            continue
        prior = None
        for y in range(y0, height, dy):
            row = row_bytes(y, xs)
            prior = prior if prior is not None else bytes(len(row))
            raw += _filter(row, prior, bpp, filters[row_index % len(filters)])
            prior = row
            row_index += 1
    compressed = zlib.compress(bytes(raw), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 1 if interlace else 0)
    parts = [_chunk(b"IHDR", ihdr)]
    if palette is not None:
        parts.append(_chunk(b"PLTE", palette))
    if idat_split:
        parts += [_chunk(b"IDAT", compressed[i : i + idat_split]) for i in range(0, len(compressed), idat_split)]
    else:
        parts.append(_chunk(b"IDAT", compressed))
    data = b"\x89PNG\r\n\x1a\n" + b"".join(parts) + _chunk(b"IEND", b"")

    # The encoder is test code: check that a real decoder reads back what we meant.
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert decoded.size == size
    if (colour_type, depth) in _PILLOW_MODE and decoded.mode == _PILLOW_MODE[(colour_type, depth)]:
        for (x, y), value in list(pixels.items())[:3]:
            pixel = decoded.getpixel((x, y))
            got = pixel if isinstance(pixel, tuple) else (pixel,)
            assert got == value, (x, y, got, value)
    return data


# --- accepted masks and their dimensions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "options", "media_type"),
    [
        ("PNG", {}, "image/png"),
        ("JPEG", {}, "image/jpeg"),
        ("JPEG", {"progressive": True}, "image/jpeg"),
        ("WEBP", {}, "image/webp"),  # lossy: VP8
        ("WEBP", {"lossless": True}, "image/webp"),  # VP8L
    ],
)
@pytest.mark.parametrize("size", [(128, 128), (301, 203), (1024, 16)])
def test_given_real_image_when_validated_then_type_and_dimensions_are_read(fmt, options, media_type, size):
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 2))
    data = save(image, fmt, **options)

    mask = validate_mask(data, None, MAX)

    assert (mask.media_type, mask.width, mask.height) == (media_type, *size)
    assert mask.data == data


def test_given_webp_with_alpha_when_validated_then_extended_header_dimensions_are_read():
    image = Image.new("RGBA", (300, 200), (0, 0, 0, 0))  # transparency makes Pillow write the extended form
    image.paste((255, 255, 255, 255), (10, 10, 50, 50))
    data = save(image, "WEBP")
    assert data[12:16] == b"VP8X"

    mask = validate_mask(data, "image/webp", MAX)

    assert (mask.width, mask.height) == (300, 200)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_given_builder_mask_in_each_format_when_validated_then_it_is_accepted(fmt):
    mask = validate_mask(mask_image(fmt.upper()), f"image/{fmt}", MAX)
    assert (mask.media_type, mask.width, mask.height) == (f"image/{fmt}", 512, 512)


@pytest.mark.parametrize(
    ("declared", "fmt"),
    [
        (None, "PNG"),
        ("", "PNG"),
        ("image/png", "PNG"),
        ("IMAGE/PNG; charset=binary", "PNG"),
        ("image/x-png", "PNG"),
        ("image/jpg", "JPEG"),
        ("image/pjpeg", "JPEG"),
        ("binary/octet-stream", "PNG"),  # S3's default content type
        ("application/octet-stream", "JPEG"),
    ],
)
def test_given_declared_type_that_agrees_or_says_nothing_when_validated_then_it_is_accepted(declared, fmt):
    assert validate_mask(mask_image(fmt, SMALL), declared, MAX).media_type == f"image/{fmt.lower()}"


def test_given_mask_exactly_at_the_size_limit_when_validated_then_it_is_accepted():
    data = mask_png((64, 64), (0, 0, 8, 8))
    assert validate_mask(data, None, max_bytes=len(data)).width == 64


@pytest.mark.parametrize("size", [(16, 16), (8192, 16), (16, 8192)])
def test_given_side_lengths_at_the_bounds_when_validated_then_they_are_accepted(size):
    assert validate_mask(mask_png(size, (0, 0, 4, 4)), None, MAX).width == size[0]


# --- rejected masks -------------------------------------------------------------------------------


def test_given_empty_file_when_validated_then_mask_empty():
    assert code_of(b"") == "MASK_EMPTY"


def test_given_file_over_the_limit_when_validated_then_mask_too_large():
    data = mask_png((64, 64), (0, 0, 8, 8))
    assert code_of(data, max_bytes=len(data) - 1) == "MASK_TOO_LARGE"


@pytest.mark.parametrize(
    "data",
    [
        b"this is a text file, not an image",
        b'{"mask": true}',
        save(Image.new("L", (64, 64), 255), "GIF"),
        save(Image.new("RGB", (64, 64), (255, 255, 255)), "BMP"),
        save(Image.new("RGB", (64, 64), (255, 255, 255)), "TIFF"),
        b"\x89PN",  # a PNG signature cut short
        b"RIFF\x10\x00\x00\x00WAVEfmt ",  # RIFF, but audio
    ],
    ids=["text", "json", "gif", "bmp", "tiff", "short-png-signature", "riff-wave"],
)
def test_given_content_that_is_not_png_jpeg_or_webp_when_validated_then_mask_not_image(data):
    assert code_of(data) == "MASK_NOT_IMAGE"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_given_image_cut_in_half_when_validated_then_mask_truncated(fmt):
    data = mask_image(fmt, SMALL)
    assert code_of(data[: len(data) // 2]) == "MASK_TRUNCATED"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_given_image_missing_its_last_bytes_when_validated_then_mask_truncated(fmt):
    data = mask_image(fmt, SMALL)
    assert code_of(data[:-4]) == "MASK_TRUNCATED"


def test_given_png_with_a_corrupted_data_byte_when_validated_then_mask_truncated():
    data = bytearray(mask_png((64, 64)))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # the chunk's CRC no longer matches

    assert code_of(bytes(data)) == "MASK_TRUNCATED"


def test_given_png_header_only_when_validated_then_mask_truncated():
    data = mask_png((64, 64))
    header_only = data[: 8 + 25] + _chunk(b"IEND", b"")  # signature + IHDR + IEND, no pixel data

    assert code_of(header_only) == "MASK_TRUNCATED"


@pytest.mark.parametrize(
    ("declared", "fmt"),
    [("image/jpeg", "PNG"), ("image/png", "JPEG"), ("image/webp", "PNG"), ("image/png", "WEBP"), ("image/jpg", "PNG")],
)
def test_given_declared_type_that_disagrees_with_content_when_validated_then_mask_type_mismatch(declared, fmt):
    assert code_of(mask_image(fmt, SMALL), declared) == "MASK_TYPE_MISMATCH"


@pytest.mark.parametrize(
    "data",
    [
        mask_png((8, 8), (0, 0, 4, 4)),
        mask_png((15, 512), (0, 0, 4, 4)),
        mask_png((512, 15), (0, 0, 4, 4)),
        mask_png((8193, 16), (0, 0, 4, 4)),
        mask_image("JPEG", (8, 8)),
        mask_image("WEBP", (8, 8)),
    ],
    ids=["png-8x8", "png-15-wide", "png-15-high", "png-8193-wide", "jpeg-8x8", "webp-8x8"],
)
def test_given_too_small_or_too_large_dimensions_when_validated_then_mask_dimensions_invalid(data):
    assert code_of(data) == "MASK_DIMENSIONS_INVALID"


# --- "selects nothing": all-black PNG masks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "colour"),
    [
        ("L", 0),
        ("1", 0),
        ("RGB", (0, 0, 0)),
        ("RGBA", (0, 0, 0, 255)),  # opaque black: the alpha channel is not "white"
        ("RGBA", (0, 0, 0, 0)),  # fully transparent black
        ("LA", (0, 255)),
        ("LA", (0, 0)),
        ("I;16", 0),
    ],
)
def test_given_all_black_png_from_pillow_when_validated_then_mask_blank(mode, colour):
    assert code_of(save(Image.new(mode, (64, 48), colour))) == "MASK_BLANK"


def test_given_builder_all_black_png_when_validated_then_mask_blank():
    assert code_of(mask_png((64, 64), box=None)) == "MASK_BLANK"


def test_given_all_black_palette_png_when_validated_then_mask_blank():
    image = Image.new("P", (64, 48), 0)
    image.putpalette([0, 0, 0, 255, 255, 255])
    assert code_of(save(image)) == "MASK_BLANK"


def test_given_all_black_8bit_palette_png_when_validated_then_mask_blank():
    palette = bytes([0, 0, 0]) + bytes(range(1, 256)) * 3  # index 0 black, no other black entry
    data = encode_png({}, SIZE, colour_type=3, depth=8, palette=palette[: 256 * 3])

    assert code_of(data) == "MASK_BLANK"


@pytest.mark.parametrize(
    ("colour_type", "depth"),
    [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (4, 8), (4, 16), (6, 8), (6, 16)],
)
@pytest.mark.parametrize("interlace", [False, True], ids=["progressive", "interlaced"])
def test_given_all_black_png_of_any_depth_and_layout_when_validated_then_mask_blank(colour_type, depth, interlace):
    channels = _CHANNELS[colour_type]
    opaque = (0,) * (channels - 1) + ((1 << depth) - 1,) if colour_type in (4, 6) else (0,) * channels
    data = encode_png({}, SIZE, colour_type, depth, interlace=interlace, background=opaque)

    assert code_of(data) == "MASK_BLANK"


def test_given_all_black_png_split_over_many_data_chunks_when_validated_then_mask_blank():
    data = encode_png({}, SIZE, 2, 8, idat_split=5)
    assert code_of(data) == "MASK_BLANK"


# --- a single white pixel anywhere is a selection ---------------------------------------------------

_W, _H = SIZE
POSITIONS = {
    "first-pixel": (0, 0),
    "first-row-last-pixel": (_W - 1, 0),
    "middle": (_W // 2, _H // 2),
    "last-row-first-pixel": (0, _H - 1),
    "last-pixel": (_W - 1, _H - 1),
}


@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("mode", ["L", "1", "RGB", "RGBA", "LA"])
def test_given_one_white_pixel_in_pillow_png_when_validated_then_mask_is_accepted(mode, where):
    blacks: dict[str, int | tuple[int, ...]] = {
        "L": 0,
        "1": 0,
        "RGB": (0, 0, 0),
        "RGBA": (0, 0, 0, 255),
        "LA": (0, 255),
    }
    whites: dict[str, int | tuple[int, ...]] = {
        "L": 255,
        "1": 1,
        "RGB": (255, 255, 255),
        "RGBA": (255, 255, 255, 255),
        "LA": (255, 255),
    }
    black, white = blacks[mode], whites[mode]
    image = Image.new(mode, SIZE, black)
    image.putpixel(POSITIONS[where], white)

    mask = validate_mask(save(image), "image/png", MAX)

    assert (mask.width, mask.height) == SIZE


@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize(
    ("colour_type", "depth"), [(0, 1), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (4, 8), (4, 16), (6, 8), (6, 16)]
)
@pytest.mark.parametrize("interlace", [False, True], ids=["progressive", "interlaced"])
def test_given_one_white_pixel_in_any_png_layout_when_validated_then_mask_is_accepted(
    colour_type, depth, interlace, where
):
    channels = _CHANNELS[colour_type]
    top = (1 << depth) - 1
    has_alpha = colour_type in (4, 6)
    background = (0,) * (channels - 1) + (top,) if has_alpha else (0,) * channels
    white = (top,) * channels
    data = encode_png({POSITIONS[where]: white}, SIZE, colour_type, depth, interlace=interlace, background=background)

    assert validate_mask(data, None, MAX).width == SIZE[0]


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_given_one_pixel_with_a_single_non_black_colour_channel_when_validated_then_mask_is_accepted(channel):
    colour = [0, 0, 0, 255]
    colour[channel] = 255
    image = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    image.putpixel((_W - 1, _H - 1), tuple(colour))

    assert validate_mask(save(image), None, MAX).height == SIZE[1]


def test_given_white_pixel_in_an_8bit_palette_png_when_validated_then_mask_is_accepted():
    palette = bytes([0, 0, 0, 255, 255, 255]) + bytes(range(2, 256)) * 3  # no other black entry
    data = encode_png({(_W - 1, _H - 1): (1,)}, SIZE, colour_type=3, depth=8, palette=palette[: 256 * 3])

    assert validate_mask(data, None, MAX).width == SIZE[0]


def test_given_builder_mask_with_a_white_box_when_validated_then_it_is_accepted():
    for mode in ("L", "RGB", "RGBA", "LA"):
        assert validate_mask(mask_png((64, 64), (8, 8, 40, 40), mode=mode), None, MAX).width == 64


# --- what a Mask exposes ---------------------------------------------------------------------------


def test_given_validated_mask_when_printed_then_its_bytes_are_not_shown():
    data = mask_png((64, 64), (0, 0, 8, 8))
    mask = validate_mask(data, None, MAX)

    text = repr(mask) + str(mask)

    assert "IHDR" not in text and "\\x89PNG" not in text and "data=" not in text
    assert base64.b64encode(data).decode()[:16] not in text
    assert "image/png" in text and "64" in text


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_given_validated_mask_when_turned_into_a_data_url_then_it_round_trips(fmt):
    data = mask_image(fmt, SMALL)
    mask = validate_mask(data, None, MAX)

    url = mask.to_data_url()
    inline = parse_mask_data_url(url, MAX)

    assert url.startswith(f"data:image/{fmt.lower()};base64,")
    assert inline.data == data
    assert inline.declared_type == mask.media_type
    assert validate_mask(inline.data, inline.declared_type, MAX) == mask


# --- every format is binarised, and checked against the parent's size ------------------------------
from vary_region.submit.mask import MaskFit, fit_mask  # noqa: E402
from vary_region.submit.mask_file import image_header_size  # noqa: E402


def sent(mask_bytes: bytes, size: tuple[int, int], fit: MaskFit = MaskFit.EXACT) -> Image.Image:
    binary = fit_mask(validate_mask(mask_bytes, None, MAX), size, fit)
    image = Image.open(io.BytesIO(binary.data))
    assert image.format == "PNG" and image.size == size == (binary.width, binary.height)
    assert binary.to_data_url().startswith("data:image/png;base64,")
    return image.convert("L")


def test_given_grey_antialiased_mask_when_fitted_then_it_is_cut_at_128_into_black_and_white():
    image = Image.new("L", (64, 32), 0)
    image.paste(127, (0, 0, 16, 32))  # just under half: kept
    image.paste(128, (16, 0, 32, 32))  # half: redrawn
    image.paste(200, (32, 0, 48, 32))
    binary = sent(save(image), (64, 32))
    assert set(binary.getdata()) == {0, 255}
    assert binary.getbbox() == (16, 0, 48, 32)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_given_lossy_mask_when_fitted_then_its_ringing_is_gone_and_the_box_stays(fmt):
    binary = sent(mask_image(fmt, (512, 512)), (512, 512))
    assert set(binary.getdata()) == {0, 255}
    box = binary.getbbox()
    assert box is not None, "the mask sent has a white area"
    left, top, right, bottom = box
    assert abs(left - 100) <= 2 and abs(top - 100) <= 2 and abs(right - 300) <= 2 and abs(bottom - 300) <= 2


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_given_all_black_lossy_mask_when_validated_then_mask_blank_for_every_format(fmt):
    assert code_of(save(Image.new("RGB", (64, 64), (0, 0, 0)), fmt)) == "MASK_BLANK"


def test_given_dark_grey_only_mask_when_validated_then_blank_after_binarisation():
    assert code_of(save(Image.new("L", (64, 64), 100))) == "MASK_BLANK"


def test_given_mask_with_transparency_when_fitted_then_painted_opaque_pixels_are_the_region():
    image = Image.new("RGBA", (64, 64), (255, 255, 255, 0))  # transparent white: kept
    image.paste((255, 255, 255, 255), (8, 8, 24, 24))  # painted white: redrawn
    image.paste((255, 0, 0, 255), (40, 40, 48, 48))  # painted red: redrawn
    image.paste((255, 255, 255, 60), (0, 56, 64, 64))  # faint: kept
    binary = sent(save(image), (64, 64))
    assert binary.getpixel((0, 0)) == 0 and binary.getpixel((10, 60)) == 0
    assert binary.getpixel((10, 10)) == 255 and binary.getpixel((44, 44)) == 255
    assert binary.getbbox() == (8, 8, 48, 48)


def test_given_fully_transparent_white_mask_when_validated_then_mask_blank():
    assert code_of(save(Image.new("RGBA", (64, 64), (255, 255, 255, 0)))) == "MASK_BLANK"


def test_given_mask_of_another_size_when_fitted_exactly_then_mask_size_mismatch_gives_both_sizes():
    with pytest.raises(JobRejected) as info:
        fit_mask(validate_mask(mask_png((512, 512)), None, MAX), (640, 384))
    assert info.value.error.code == "MASK_SIZE_MISMATCH"
    assert "512x512" in info.value.error.message and "640x384" in info.value.error.message


def test_given_mask_of_another_size_when_fitted_with_resize_then_scaled_and_strictly_binary():
    binary = sent(mask_png((512, 512), (128, 128, 320, 320)), (640, 384), MaskFit.RESIZE)
    assert set(binary.getdata()) == {0, 255}
    box = binary.getbbox()
    assert box is not None, "the mask sent has a white area"
    left, top, right, bottom = box
    assert abs(left - 160) <= 1 and abs(right - 400) <= 1 and abs(top - 96) <= 1 and abs(bottom - 240) <= 1


def test_given_tiny_selection_lost_in_downscaling_when_resized_then_mask_blank():
    with pytest.raises(JobRejected) as info:
        fit_mask(validate_mask(mask_png((1024, 1024), (0, 0, 1, 1)), None, MAX), (64, 64), MaskFit.RESIZE)
    assert info.value.error.code == "MASK_BLANK"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_given_an_image_prefix_when_its_header_is_read_then_the_size_comes_without_the_rest(fmt):
    data = save(Image.effect_noise((640, 384), 60).convert("RGB"), fmt)
    assert image_header_size(data[:4096]) == (640, 384)
    assert image_header_size(data[:10]) is None
