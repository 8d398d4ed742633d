"""The mask step's cost at a large parent: validating and binarising an uploaded mask file, and
rendering a mask from regions, each at 2048x2048 (info figures: no target)."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

from bench.report import Figure, Section

RUNS = 5


def _median_ms(step: Callable[[], object], runs: int = RUNS) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _mask_file(size: tuple[int, int]) -> bytes:
    """An anti-aliased grey ellipse on black: what an image editor's soft brush leaves."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("L", size, 0)
    width, height = size
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=255)
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(4)).save(buffer, "PNG")
    return buffer.getvalue()


def mask_step(size: tuple[int, int] = (2048, 2048)) -> Section:
    from vary_region.submit.mask import fit_mask, validate_mask
    from vary_region.submit.mask_regions import parse_mask_regions, render_regions

    width, height = size
    data = _mask_file(size)
    regions = parse_mask_regions(
        {
            "regions": [
                {"rect": [0.1, 0.1, 0.3, 0.2]},
                {"ellipse": [0.6, 0.6, 0.2, 0.15]},
                {"polygon": [[0.1, 0.9], [0.4, 0.5], [0.45, 0.95]]},
            ],
            "units": "fraction",
        }
    )
    file_ms = _median_ms(lambda: fit_mask(validate_mask(data, "image/png", 8 * 1024 * 1024), size))
    regions_ms = _median_ms(lambda: render_regions(regions, size))
    return Section(
        title=f"Mask step at {width}x{height} (median of {RUNS} runs)",
        figures=[
            Figure("mask_file_ms", "validate + binarise + encode a mask file", round(file_ms, 1), "ms"),
            Figure("mask_regions_ms", "render regions + encode", round(regions_ms, 1), "ms"),
        ],
        details={"mask_file_bytes": len(data), "size": f"{width}x{height}"},
    )


if __name__ == "__main__":
    for figure in mask_step().figures:
        print(f"{figure.label}: {figure.value} {figure.unit}")
