"""Masks given as shapes in job.json: `"mask": {"regions": [...], "units": "px" | "fraction"}`.

Parsed and checked when the job file is read (before the parent is even fetched), rendered once the
parent's real size is known: white inside any region, black elsewhere. Every problem with a shape is
`MASK_REGIONS_INVALID`, its message naming the region (by index, from 0) and what is wrong with it;
regions that cover almost nothing of the image are `MASK_REGIONS_TOO_SMALL` (most often fractions
given without `"units": "fraction"`, which in pixels are a one-pixel mask).

A shape must lie wholly inside the image (edges included: a rect may end exactly at the width);
a region reaching outside it is a mistake in its numbers, not something to clip silently.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any, NamedTuple

from vary_region.core.errors import JobRejected
from vary_region.submit.mask import BinaryMask, check_parent_size, encode_png
from vary_region.submit.mask_file import MAX_SIDE
from vary_region.submit.spec_keys import MASK_KEYS, did_you_mean, refuse_unknown_keys

# Value types are NamedTuples, not frozen dataclasses: they are built at every cold start of the
# submit function, where a frozen dataclass costs about 0.5 ms to build and a NamedTuple 0.1 ms.
MAX_REGIONS = 100
MAX_POLYGON_POINTS = 1000
_CODE = "MASK_REGIONS_INVALID"
TOO_SMALL = "MASK_REGIONS_TOO_SMALL"
# The least share of the image the regions may cover (0.1 %: about 32x32 pixels of a 1024x1024 upscale).
MIN_COVERED = 0.001
_FRACTION_HINT = 'for fractions 0..1 of the image\'s width and height, set "units": "fraction"'


class Units(StrEnum):
    PX = "px"  # pixels of the parent image
    FRACTION = "fraction"  # 0..1 of the parent's width (x, w, rx) and height (y, h, ry)


class Rect(NamedTuple):
    x: float
    y: float
    w: float
    h: float


class Ellipse(NamedTuple):
    cx: float
    cy: float
    rx: float
    ry: float


class Polygon(NamedTuple):
    points: tuple[tuple[float, float], ...]


Region = Rect | Ellipse | Polygon


class MaskRegions(NamedTuple):
    regions: tuple[Region, ...]
    units: Units = Units.PX


def _invalid(message: str, index: int | None = None) -> JobRejected:
    where = f"mask region {index}: " if index is not None else "`mask`: "
    return JobRejected(_CODE, where + message)


def parse_mask_regions(value: Any) -> MaskRegions:
    """Check the shapes' form and every bound that does not need the parent's size."""
    if not isinstance(value, dict):
        raise _invalid('must be an object like {"regions": [...], "units": "px"}')
    refuse_unknown_keys(value, MASK_KEYS, "`mask`")
    units_value = value.get("units", Units.PX.value)
    if units_value not in (Units.PX.value, Units.FRACTION.value):
        hint = did_you_mean(units_value, [units.value for units in Units]) if isinstance(units_value, str) else ""
        raise _invalid(f'`units` must be "px" or "fraction", not {units_value!r}{hint}')
    units = Units(units_value)
    regions = value.get("regions")
    if not isinstance(regions, list) or not regions:
        raise _invalid("`regions` must be a non-empty list of shapes")
    if len(regions) > MAX_REGIONS:
        raise _invalid(f"at most {MAX_REGIONS} regions, not {len(regions)}")
    parsed = MaskRegions(tuple(_region(region, index, units) for index, region in enumerate(regions)), units)
    if units is Units.PX and all(number <= 1 for region in parsed.regions for number in _coordinates(region)):
        raise JobRejected(
            TOO_SMALL,
            f"every coordinate is between 0 and 1, which in pixels is a mask of a pixel or two; {_FRACTION_HINT}",
        )
    if units is Units.FRACTION:
        check_bounds(parsed, (1, 1))  # fractions need no parent to be checked against it
        check_coverage(parsed, (1, 1))  # nor to know their share of its area (before a chain pays its imagine)
    return parsed


def check_bounds(mask: MaskRegions, size: tuple[int, int]) -> None:
    """Every region inside an image of `size` (pixels), or MASK_REGIONS_INVALID naming the first not."""
    width, height = (1.0, 1.0) if mask.units is Units.FRACTION else (float(size[0]), float(size[1]))
    for index, region in enumerate(mask.regions):
        left, top, right, bottom = _extent(region)
        if left < 0 or top < 0 or right > width or bottom > height:
            raise _invalid(
                f"reaches outside the image ({_describe(left, top, right, bottom, mask.units)}; "
                f"the image is {_size_text(size, mask.units)})",
                index,
            )


def check_coverage(mask: MaskRegions, size: tuple[int, int]) -> None:
    """MASK_REGIONS_TOO_SMALL unless the regions may cover MIN_COVERED of an image of `size`.

    Their areas are summed (a polygon by its bounding box): an upper bound of what is drawn, so only
    regions that certainly cover too little are refused, and a share in fractions is the same at any
    size (the parse-time check of a chain agrees with the check at the parent's real size)."""
    image = 1.0 if mask.units is Units.FRACTION else float(size[0]) * float(size[1])
    covered = sum(_area(region) for region in mask.regions) / image
    if covered < MIN_COVERED:
        pixels = f" of {size[0]}x{size[1]} pixels" if mask.units is Units.PX else ""
        hint = f"; {_FRACTION_HINT}" if mask.units is Units.PX else ""
        raise JobRejected(
            TOO_SMALL, f"the regions cover {covered:.3%} of the image{pixels}, under the {MIN_COVERED:.1%} needed{hint}"
        )


def render_regions(mask: MaskRegions, size: tuple[int, int]) -> BinaryMask:
    """The regions drawn at the parent's size: white (255) inside any of them, black (0) elsewhere."""
    from PIL import Image, ImageDraw

    check_parent_size(size)
    check_bounds(mask, size)
    check_coverage(mask, size)
    width, height = size
    sx, sy = (float(width), float(height)) if mask.units is Units.FRACTION else (1.0, 1.0)
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    for region in mask.regions:
        if isinstance(region, Rect):
            # Pixel columns x..x+w-1: a rect ending at the width fills the last column, never past it.
            left, top = round(region.x * sx), round(region.y * sy)
            right = max(left + 1, round((region.x + region.w) * sx))
            bottom = max(top + 1, round((region.y + region.h) * sy))
            draw.rectangle((left, top, right - 1, bottom - 1), fill=255)
        elif isinstance(region, Ellipse):
            cx, cy, rx, ry = region.cx * sx, region.cy * sy, region.rx * sx, region.ry * sy
            draw.ellipse((cx - rx, cy - ry, max(cx - rx, cx + rx - 1), max(cy - ry, cy + ry - 1)), fill=255)
        else:
            draw.polygon([(x * sx, y * sy) for x, y in region.points], fill=255)
    return BinaryMask(width, height, encode_png(image))


def _region(region: Any, index: int, units: Units) -> Region:
    if not isinstance(region, dict) or len(region) != 1:
        raise _invalid('must be an object with one shape: {"rect": ...}, {"ellipse": ...} or {"polygon": ...}', index)
    ((shape, value),) = region.items()
    if shape == "rect":
        x, y, w, h = _numbers(value, 4, "rect [x, y, w, h]", index, units)
        if w <= 0 or h <= 0:
            raise _invalid(f"rect has zero area (w={w:g}, h={h:g}); width and height must be positive", index)
        return Rect(x, y, w, h)
    if shape == "ellipse":
        cx, cy, rx, ry = _numbers(value, 4, "ellipse [cx, cy, rx, ry]", index, units)
        if rx <= 0 or ry <= 0:
            raise _invalid(f"ellipse has zero area (rx={rx:g}, ry={ry:g}); both radii must be positive", index)
        return Ellipse(cx, cy, rx, ry)
    if shape == "polygon":
        return _polygon(value, index, units)
    hint = did_you_mean(shape, ("rect", "ellipse", "polygon"))
    raise _invalid(f"unknown shape {shape!r}{hint}; the shapes are rect, ellipse and polygon", index)


def _polygon(value: Any, index: int, units: Units) -> Polygon:
    if not isinstance(value, list):
        raise _invalid("polygon must be a list of [x, y] points", index)
    if len(value) < 3:
        raise _invalid(f"polygon has {len(value)} points; it needs at least three", index)
    if len(value) > MAX_POLYGON_POINTS:
        raise _invalid(f"polygon has more than {MAX_POLYGON_POINTS} points", index)
    points = tuple(_point(point, index, units) for point in value)
    twice_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True))
    if twice_area == 0:
        raise _invalid("polygon has zero area (its points are on one line, or repeat)", index)
    return Polygon(points)


def _point(point: Any, index: int, units: Units) -> tuple[float, float]:
    x, y = _numbers(point, 2, "polygon point [x, y]", index, units)
    return x, y


def _numbers(value: Any, count: int, form: str, index: int, units: Units) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != count:
        raise _invalid(f"must be {form}: a list of {count} numbers", index)
    numbers = []
    for item in value:
        # bool is an int to Python, never a coordinate to a person.
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise _invalid(f"{form} holds {item!r}, which is not a number", index)
        if not math.isfinite(item):
            raise _invalid(f"{form} holds {item!r}, which is not a finite number", index)
        if item < 0:
            raise _invalid(f"{form} holds {item:g}; coordinates and sizes are never negative", index)
        limit = 1.0 if units is Units.FRACTION else float(MAX_SIDE)
        if item > limit:
            beyond = "1, the largest fraction" if units is Units.FRACTION else f"{MAX_SIDE} pixels"
            raise _invalid(f"{form} holds {item:g}, beyond {beyond}", index)
        numbers.append(float(item))
    return tuple(numbers)


def _coordinates(region: Region) -> tuple[float, ...]:
    if isinstance(region, Polygon):
        return tuple(number for point in region.points for number in point)
    return tuple(region)


def _area(region: Region) -> float:
    if isinstance(region, Rect):
        return region.w * region.h
    if isinstance(region, Ellipse):
        return math.pi * region.rx * region.ry
    left, top, right, bottom = _extent(region)
    return (right - left) * (bottom - top)


def _extent(region: Region) -> tuple[float, float, float, float]:
    if isinstance(region, Rect):
        return region.x, region.y, region.x + region.w, region.y + region.h
    if isinstance(region, Ellipse):
        return region.cx - region.rx, region.cy - region.ry, region.cx + region.rx, region.cy + region.ry
    xs, ys = [x for x, _ in region.points], [y for _, y in region.points]
    return min(xs), min(ys), max(xs), max(ys)


def _describe(left: float, top: float, right: float, bottom: float, units: Units) -> str:
    return f"it spans x {left:g}..{right:g}, y {top:g}..{bottom:g}" + (" of 1" if units is Units.FRACTION else "")


def _size_text(size: tuple[int, int], units: Units) -> str:
    return "1x1 in fractions" if units is Units.FRACTION else f"{size[0]}x{size[1]} pixels"
