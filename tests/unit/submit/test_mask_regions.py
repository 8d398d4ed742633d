"""Masks given as regions: every malformed shape is refused with its index, and a valid one is drawn
white exactly inside, black elsewhere, at the parent's size."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image
from vary_region.core.errors import JobRejected
from vary_region.submit.mask_regions import Ellipse, Polygon, Rect, Units, parse_mask_regions, render_regions


def invalid(value, size=(640, 384)) -> str:
    with pytest.raises(JobRejected) as info:
        render_regions(parse_mask_regions(value), size)
    assert info.value.error.code == "MASK_REGIONS_INVALID"
    return info.value.error.message


def pixels(value, size=(640, 384)) -> Image.Image:
    rendered = render_regions(parse_mask_regions(value), size)
    image = Image.open(io.BytesIO(rendered.data))
    assert (image.format, image.size, (rendered.width, rendered.height)) == ("PNG", size, size)
    return image.convert("L")


def test_given_each_shape_when_parsed_then_typed_regions_come_back():
    parsed = parse_mask_regions(
        {
            "regions": [{"rect": [1, 2, 3, 4]}, {"ellipse": [50, 50, 5, 6]}, {"polygon": [[0, 0], [9, 0], [0, 9]]}],
            "units": "px",
        }
    )
    assert parsed.units is Units.PX
    assert parsed.regions == (Rect(1, 2, 3, 4), Ellipse(50, 50, 5, 6), Polygon(((0, 0), (9, 0), (0, 9))))


def test_given_no_units_when_parsed_then_pixels_are_meant():
    assert parse_mask_regions({"regions": [{"rect": [0, 0, 10, 10]}]}).units is Units.PX


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"regions": []}, "non-empty"),
        ({"regions": "rect"}, "non-empty"),
        ([{"rect": [0, 0, 1, 1]}], "must be an object"),
        ({"regions": [{"rect": [0, 0, 1, 1]}], "units": "cm"}, "units"),
        ({"regions": [{"rect": [0, 0, 1, 1]}], "units": "fractions"}, "(did you mean 'fraction'?)"),
        ({"regions": [{"square": [0, 0, 1]}]}, "region 0: unknown shape"),
        ({"regions": [{"rectangle": [0, 0, 1]}]}, "unknown shape 'rectangle' (did you mean 'rect'?)"),
        ({"regions": [{"rect": [0, 0, 1, 1], "ellipse": [1, 1, 1, 1]}]}, "region 0"),
        ({"regions": [{"rect": [0, 0, 1, 1]}, {"rect": [0, 0, 1]}]}, "region 1: must be rect"),
        ({"regions": [{"rect": [0, 0, "10", 10]}]}, "not a number"),
        ({"regions": [{"rect": [0, 0, True, 10]}]}, "not a number"),
        ({"regions": [{"rect": [0, 0, math.nan, 10]}]}, "not a finite number"),
        ({"regions": [{"ellipse": [10, 10, math.inf, 10]}]}, "not a finite number"),
        ({"regions": [{"rect": [-1, 0, 10, 10]}]}, "negative"),
        ({"regions": [{"rect": [0, 0, 0, 10]}]}, "zero area"),
        ({"regions": [{"ellipse": [10, 10, 5, 0]}]}, "zero area"),
        ({"regions": [{"polygon": [[0, 0], [5, 5]]}]}, "at least three"),
        ({"regions": [{"polygon": [[0, 0], [5, 5], [10, 10]]}]}, "zero area"),
        ({"regions": [{"polygon": [[0, 0], [5, "x"], [10, 0]]}]}, "not a number"),
        ({"regions": [{"polygon": "0,0 5,5 9,0"}]}, "list of [x, y]"),
        ({"regions": [{"rect": [0, 0, 0.5, 1.5]}], "units": "fraction"}, "beyond 1"),
        ({"regions": [{"rect": [0.6, 0, 0.5, 0.5]}], "units": "fraction"}, "outside"),
        ({"regions": [{"ellipse": [0.1, 0.5, 0.2, 0.2]}], "units": "fraction"}, "outside"),
    ],
)
def test_given_malformed_regions_when_parsed_then_mask_regions_invalid_names_the_problem(value, words):
    assert words in invalid(value)


@pytest.mark.parametrize(
    ("region", "index"),
    [
        ({"rect": [600, 0, 41, 10]}, 0),  # 641 > 640
        ({"rect": [0, 300, 10, 85]}, 0),  # 385 > 384
        ({"ellipse": [635, 100, 10, 10]}, 0),
        ({"polygon": [[0, 0], [700, 0], [0, 100]]}, 0),
    ],
)
def test_given_pixel_region_outside_the_parent_when_rendered_then_invalid_with_sizes(region, index):
    message = invalid({"regions": [{"rect": [0, 0, 5, 5]}, region]})
    assert "region 1" in message and "640x384" in message


def test_given_rect_ending_exactly_at_the_edge_when_rendered_then_it_fills_the_last_column_and_row():
    image = pixels({"regions": [{"rect": [600, 344, 40, 40]}]})
    assert image.getbbox() == (600, 344, 640, 384)


def test_given_pixel_rect_when_rendered_then_white_exactly_inside_and_strictly_binary():
    image = pixels({"regions": [{"rect": [10, 20, 30, 40]}]})
    assert image.getbbox() == (10, 20, 40, 60)
    assert set(image.getdata()) == {0, 255}
    assert image.crop((10, 20, 40, 60)).getextrema() == (255, 255)


def test_given_fraction_rect_when_rendered_then_it_scales_by_width_and_height():
    image = pixels({"regions": [{"rect": [0.25, 0.5, 0.5, 0.25]}], "units": "fraction"})
    assert image.getbbox() == (160, 192, 480, 288)


def test_given_ellipse_and_polygon_when_rendered_then_inside_is_white_and_outside_black():
    image = pixels({"regions": [{"ellipse": [100, 100, 50, 30]}, {"polygon": [[400, 50], [600, 50], [500, 250]]}]})
    assert image.getpixel((100, 100)) == 255 and image.getpixel((140, 100)) == 255
    assert image.getpixel((52, 72)) == 0, "the ellipse's bounding-box corner is outside it"
    assert image.getpixel((500, 100)) == 255 and image.getpixel((410, 240)) == 0
    assert image.getbbox() == (50, 50, 601, 251)
    assert set(image.getdata()) == {0, 255}


def test_given_regions_that_overlap_when_rendered_then_their_union_is_white():
    image = pixels({"regions": [{"rect": [0, 0, 20, 20]}, {"rect": [10, 10, 20, 20]}]})
    assert image.getbbox() == (0, 0, 30, 30)
    assert image.getpixel((25, 5)) == 0 and image.getpixel((15, 15)) == 255


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"regions": [{"rect": [0, 0, 10, 10]}], "feather": 3}, "unknown key 'feather' in `mask`"),
        ({"regions": [{"rect": [0, 0, 0.5, 0.5]}], "unit": "fraction"}, "'unit' (did you mean 'units'?)"),
        ({"region": [{"rect": [0, 0, 10, 10]}]}, "'region' (did you mean 'regions'?)"),
    ],
)
def test_given_an_unknown_key_in_the_mask_object_when_parsed_then_spec_unknown_key_with_the_near_miss(value, words):
    with pytest.raises(JobRejected) as info:
        parse_mask_regions(value)
    assert info.value.error.code == "SPEC_UNKNOWN_KEY"
    assert words in info.value.error.message


# --- regions that cover almost nothing: most often fractions given without "units": "fraction" -----


def too_small(value, size=(1024, 1024)) -> str:
    with pytest.raises(JobRejected) as info:
        render_regions(parse_mask_regions(value), size)
    assert info.value.error.code == "MASK_REGIONS_TOO_SMALL"
    return info.value.error.message


@pytest.mark.parametrize(
    "regions",
    [
        [{"rect": [0.3, 0.1, 0.4, 0.5]}],
        [{"rect": [0, 0, 1, 1]}],
        [{"ellipse": [0.5, 0.5, 0.2, 0.1]}, {"polygon": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.8]]}],
    ],
    ids=["fraction-rect", "unit-square", "ellipse-and-polygon"],
)
def test_given_pixel_regions_whose_every_coordinate_is_between_0_and_1_when_parsed_then_too_small_with_the_hint(
    regions,
):
    with pytest.raises(JobRejected) as info:
        parse_mask_regions({"regions": regions})  # refused before the parent is even read
    assert info.value.error.code == "MASK_REGIONS_TOO_SMALL"
    assert '"units": "fraction"' in info.value.error.message


def test_given_the_same_numbers_in_fractions_when_rendered_then_they_are_drawn():
    image = pixels({"regions": [{"rect": [0.3, 0.1, 0.4, 0.5]}], "units": "fraction"}, (1000, 1000))
    assert image.getbbox() == (300, 100, 700, 600)


def test_given_pixel_regions_under_a_thousandth_of_the_parent_when_rendered_then_too_small():
    # 32x32 = 1024 pixels: just under 0.1 % of 1024x1024 (1048.6); refused only once the size is known.
    parsed = parse_mask_regions({"regions": [{"rect": [100, 100, 32, 32]}]})

    message = too_small({"regions": [{"rect": [100, 100, 32, 32]}]})

    assert "1024x1024" in message and '"units": "fraction"' in message
    assert render_regions(parsed, (1000, 1000)).width == 1000, "1024 pixels of 1000x1000 are enough"


def test_given_several_small_regions_when_rendered_then_their_areas_add_up():
    small = {"rect": [0, 0, 30, 30]}  # 900 pixels each: 0.086 % of 1024x1024 alone
    too_small({"regions": [small]})

    image = pixels({"regions": [small, {"rect": [50, 50, 30, 30]}]}, (1024, 1024))

    assert image.getbbox() == (0, 0, 80, 80)


def test_given_fraction_regions_under_a_thousandth_when_parsed_then_too_small_before_any_size_is_known():
    with pytest.raises(JobRejected) as info:
        parse_mask_regions({"regions": [{"rect": [0.5, 0.5, 0.03, 0.03]}], "units": "fraction"})  # 0.09 %
    assert info.value.error.code == "MASK_REGIONS_TOO_SMALL"
    assert "0.090%" in info.value.error.message and "units" not in info.value.error.message

    assert parse_mask_regions({"regions": [{"rect": [0.5, 0.5, 0.04, 0.03]}], "units": "fraction"})
