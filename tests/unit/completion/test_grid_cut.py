"""Cutting a grid given alone into its four images: the quarters in Midjourney's order, and a stored
grid that is no image, too small or too large to decode refused with GridNotCut (the job then ends
RESULT_INCOMPLETE), never decoded past the bound."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from PIL import Image
from vary_region.completion import grid_cut
from vary_region.completion.grid_cut import GridNotCut, cut_grid
from vary_region.completion.image_copier import CopiedImage

GRID = CopiedImage("grid", "results/j/grid.png", "https://cdn.example/grid.png", 0, "image/png")
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # 1 top left, 2 top right, 3, 4


class Stored:
    def __init__(self, data: bytes | None) -> None:
        self.data = data


class Files:
    def __init__(self, grid: bytes | None) -> None:
        self.grid = grid
        self.written: dict[str, tuple[bytes, str]] = {}

    def read(self, key: str, max_bytes: int) -> Stored | None:
        assert key == GRID.key
        return None if self.grid is None else Stored(self.grid if len(self.grid) <= max_bytes else None)

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.written[key] = (data, content_type)


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=format)
    return out.getvalue()


def grid_of(width: int, height: int, mode: str = "RGB") -> Image.Image:
    grid = Image.new("RGB", (width, height))
    for index, colour in enumerate(COLOURS):
        left, top = (index % 2) * (width // 2), (index // 2) * (height // 2)
        grid.paste(colour, (left, top, left + width // 2 + width % 2, top + height // 2 + height % 2))
    return grid.convert(mode)


def cut(data: bytes | None, max_bytes: int = 10_000_000) -> tuple[list[CopiedImage], Files]:
    files = Files(data)
    quarters = cut_grid(files, GRID, lambda name: f"results/j/{name}.png", max_bytes)  # type: ignore[arg-type]
    return quarters, files


@pytest.mark.parametrize(
    ("format", "mode"), [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "CMYK"), ("WEBP", "RGB")]
)
def test_the_quarters_are_stored_as_png_in_midjourneys_order(format: str, mode: str) -> None:
    quarters, files = cut(encoded(grid_of(64, 48, mode), format))

    assert [q.name for q in quarters] == ["1", "2", "3", "4"]
    for quarter, colour in zip(quarters, COLOURS, strict=True):
        data, content_type = files.written[quarter.key]
        image = Image.open(io.BytesIO(data))
        assert (image.format, content_type, image.size) == ("PNG", "image/png", (32, 24))
        pixel = image.convert("RGB").getpixel((16, 12))
        assert isinstance(pixel, tuple)
        red, green, blue = pixel[:3]
        assert max(abs(red - colour[0]), abs(green - colour[1]), abs(blue - colour[2])) < 24, (quarter.name, colour)
        assert (quarter.source_url, quarter.size) == (GRID.source_url, len(data))


def test_an_odd_sized_grid_loses_no_pixel() -> None:
    quarters, files = cut(encoded(grid_of(65, 49)))
    sizes = [Image.open(io.BytesIO(files.written[q.key][0])).size for q in quarters]
    assert sizes == [(32, 24), (33, 24), (32, 25), (33, 25)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "no longer in the bucket"),
        (b"<html>not an image</html>", "not a PNG, JPEG or WebP"),
        (
            encoded(Image.frombytes("RGB", (64, 64), random.Random(7).randbytes(64 * 64 * 3)))[:3000],
            "could not be decoded",
        ),
        (encoded(grid_of(24, 12)), "too small"),
        (encoded(Image.new("RGB", (64, 64)), "GIF"), "not a PNG, JPEG or WebP"),
    ],
    ids=["gone", "html", "truncated", "too-small", "gif"],
)
def test_a_grid_that_is_no_usable_image_is_refused_and_nothing_is_stored(data: bytes | None, reason: str) -> None:
    with pytest.raises(GridNotCut, match=reason):
        cut(data)


def test_a_grid_over_the_image_size_limit_is_not_read() -> None:
    with pytest.raises(GridNotCut, match="larger than the image-size limit"):
        cut(encoded(grid_of(64, 64)), max_bytes=10)


def test_a_grid_too_large_to_decode_is_refused_from_its_header(monkeypatch: Any) -> None:
    data = encoded(grid_of(64, 64))
    decoded: list[bool] = []
    monkeypatch.setattr(grid_cut, "MAX_GRID_DECODED_BYTES", 64 * 64 * 4 - 1)
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(True))
    with pytest.raises(GridNotCut, match="too large to decode"):
        cut(data)
    assert decoded == [], "refused before any pixel is decoded"
