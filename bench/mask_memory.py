"""Peak memory of the submit function's mask step, for every form of mask file the rules allow, at
the largest size they allow it, against the submit function's MemorySize in template.yaml.

Each figure is one subprocess (bench/mask_memory_probe.py) that imports the submit handler as a
cold start does, then checks a mask file and fits it to the parent exactly and, in another
subprocess, resized to the largest parent (8192x8191): the figure is the larger of the two peaks
of the whole process's RSS, which is what Lambda stops a function at. The baseline, on the same file
in the same run, is the mask step as it was before issue #23 (bench/baseline.py). Regions drawn at
the largest parent are measured too.

The largest size of a form is the largest square the rules accept: 8192x8192, or less where
decoding it would take more than submit/mask_file.py's MAX_DECODED_BYTES (MASK_TOO_LARGE).
"""

from __future__ import annotations

import io
import json
import math
import statistics
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.import_bench import LAYER, REPO_ROOT, LambdaFunction, runtime_environment, template_functions
from bench.report import Figure, Section

if TYPE_CHECKING:
    from PIL import Image

MiB = 1024 * 1024
TARGET_SHARE = 0.6  # of the submit function's MemorySize: room for the batch's other work and the unforeseen
PROBE = REPO_ROOT / "bench" / "mask_memory_probe.py"
WARMUP_SIDE = 64
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@dataclass(frozen=True)
class MaskForm:
    key: str
    label: str
    encode: Callable[[Image.Image], bytes]  # from the RGBA drawing at the measured size


def _saved(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _png(image: Image.Image, **options: Any) -> bytes:
    return _saved(image, "PNG", compress_level=1, **options)


def _grey16(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")


def _palette(image: Image.Image) -> Image.Image:
    return image.convert("RGB").quantize(16)


def _bilevel(image: Image.Image) -> Image.Image:
    from PIL import Image

    return image.convert("L").convert("1", dither=Image.Dither.NONE)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _rgba_png(image: Image.Image, *, interlaced: bool = False) -> bytes:
    """An RGBA PNG whose rows are all filter type 0, Adam7-interlaced on request (Pillow writes no
    interlaced PNG; its adaptive row filters also take seconds at these sizes, which would make the
    test that measures this form slow)."""
    width, height = image.size
    pixels = memoryview(image.convert("RGBA").tobytes()).cast("I")
    raw = bytearray()
    for x0, y0, dx, dy in _ADAM7 if interlaced else ((0, 0, 1, 1),):
        if x0 >= width or y0 >= height:
            continue
        for y in range(y0, height, dy):
            raw += b"\0"
            raw += pixels[y * width + x0 : (y + 1) * width : dx].tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, int(interlaced))
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 1)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


FORMS = (
    MaskForm("rgba_png", "RGBA PNG", _rgba_png),
    MaskForm("rgb_png", "RGB PNG", lambda im: _png(im.convert("RGB"))),
    MaskForm("grey_alpha_png", "grey + alpha PNG", lambda im: _png(im.convert("LA"))),
    MaskForm("interlaced_png", "interlaced RGBA PNG", lambda im: _rgba_png(im, interlaced=True)),
    MaskForm("grey16_png", "16-bit grey PNG", lambda im: _png(_grey16(im))),
    MaskForm("palette_png", "palette PNG", lambda im: _png(_palette(im))),
    MaskForm("palette_alpha_png", "palette PNG + transparency", lambda im: _png(_palette(im), transparency=0)),
    MaskForm("grey_png", "grey PNG", lambda im: _png(im.convert("L"))),
    MaskForm("bilevel_png", "1-bit PNG", lambda im: _png(_bilevel(im))),
    MaskForm("jpeg", "JPEG (4:2:0)", lambda im: _saved(im.convert("RGB"), "JPEG", quality=90)),
    MaskForm(
        "jpeg_progressive",
        "progressive JPEG 4:4:4",
        lambda im: _saved(im.convert("RGB"), "JPEG", quality=90, progressive=True, subsampling=0),
    ),
    MaskForm("jpeg_cmyk", "CMYK JPEG", lambda im: _saved(im.convert("CMYK"), "JPEG", quality=90)),
    MaskForm(
        "jpeg_grey", "grey progressive JPEG", lambda im: _saved(im.convert("L"), "JPEG", quality=90, progressive=True)
    ),
    MaskForm("webp", "WebP + alpha", lambda im: _saved(im, "WEBP", quality=90)),
)


def drawing(size: tuple[int, int]) -> Image.Image:
    """A mask as painted: a white ellipse, a red stroke, a faint (mostly transparent) area on black."""
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGBA", size, (0, 0, 0, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=(255, 255, 255, 255))
    draw.rectangle((width // 20, height // 20, width // 5, height // 2), fill=(255, 0, 0, 255))
    draw.rectangle((width * 4 // 5, height // 20, width * 19 // 20, height // 2), fill=(255, 255, 255, 40))
    return image


def largest_side(form: MaskForm) -> int:
    """The largest square side the rules accept for this form (the model in submit/mask_file.py)."""
    from PIL import Image
    from vary_region.submit.mask_file import MAX_DECODED_BYTES, MAX_SIDE, decoded_bytes_per_pixel, sniff_media_type

    sample = form.encode(drawing((WARMUP_SIDE, WARMUP_SIDE)))
    media_type = sniff_media_type(sample)
    assert media_type is not None
    per_pixel = decoded_bytes_per_pixel(Image.open(io.BytesIO(sample)), media_type)
    return min(MAX_SIDE, math.isqrt(int(MAX_DECODED_BYTES / per_pixel)))


def submit_function() -> LambdaFunction:
    return next(function for function in template_functions() if function.name == "submit")


def memory_size_mib(function: LambdaFunction) -> int:
    return int(function.environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])


def probe(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps measured in one fresh interpreter, in the submit function's task root and environment
    (see bench/mask_memory_probe.py for a step's fields)."""
    function = submit_function()
    done = subprocess.run(
        [sys.executable, "-s", str(PROBE), json.dumps(steps)],
        cwd=function.source,
        env=runtime_environment(function, LAYER),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mask memory probe of {steps} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


def _step(files: dict[str, tuple[Path, Path, int]], parent: tuple[int, int], key: str, how: str) -> dict[str, Any]:
    mask, warmup, side = files[key]
    fitted_to = parent if how == "resize" else (side, side)
    return {
        "mask": str(mask),
        "warmup": str(warmup),
        "parent": list(fitted_to),
        "resize": how == "resize",
        "naive": how == "naive",
    }


def run(max_side: int | None = None, one_process: bool = False) -> Section:
    """Every form at its largest size. The smoke run caps the size (`max_side`) and measures every
    step in one process (`one_process`): it checks that the benchmark works, not the figures."""
    from vary_region.submit.mask_file import MAX_SIDE

    function = submit_function()
    memory = memory_size_mib(function)
    target = TARGET_SHARE * memory
    cap = max_side or MAX_SIDE
    parent = (cap, cap - 1)  # the largest parent that is not the mask's own size: resized
    section = Section(f"mask memory (submit function: {memory} MB)")
    with tempfile.TemporaryDirectory(prefix="vary-region-mask-memory-") as scratch:
        files: dict[str, tuple[Path, Path, int]] = {}
        for form in FORMS:
            side = min(cap, largest_side(form))
            mask, warmup = Path(scratch) / f"{form.key}.mask", Path(scratch) / f"{form.key}.warmup"
            mask.write_bytes(form.encode(drawing((side, side))))
            warmup.write_bytes(form.encode(drawing((WARMUP_SIDE, WARMUP_SIDE))))
            files[form.key] = (mask, warmup, side)

        jobs: list[tuple[str, str]] = [(form.key, how) for form in FORMS for how in ("exact", "resize", "naive")]
        steps = [_step(files, parent, key, how) for key, how in jobs] + [{"parent": [cap, cap]}]
        jobs.append(("regions", ""))
        if one_process:
            measured = probe(steps)
        else:  # a fresh process per figure; two at once: each peak is its own process's
            with ThreadPoolExecutor(max_workers=2) as pool:
                measured = [result for results in pool.map(lambda step: probe([step]), steps) for result in results]
        results = dict(zip(jobs, measured, strict=True))

    at_rest = statistics.median(result["rss_before_mb"] for result in results.values())
    section.figures.append(
        Figure("mask_memory_at_rest_mib", "submit function at rest (runtime, imports, Pillow)", at_rest, "MiB")
    )
    details: dict[str, Any] = {
        "method": "VmHWM of a subprocess that imported the submit handler and warmed up on a small mask of the "
        "same form, reset before the step; see bench/mask_memory_probe.py",
        "memory_size_mb": memory,
        "target_mib": target,
        "resized_to": f"{parent[0]}x{parent[1]}",
        "forms": {},
    }
    for form in FORMS:
        side = files[form.key][2]
        exact, resized, naive = (results[(form.key, how)] for how in ("exact", "resize", "naive"))
        refused = [r["rejected"] for r in (exact, resized) if r["rejected"]]
        peak = math.nan if refused else max(exact["peak_rss_mb"], resized["peak_rss_mb"])
        if refused:
            section.findings.append(f"{form.label} {side}x{side}, the largest the rules allow, was refused: {refused}")
        section.figures += [
            Figure(
                f"mask_memory_{form.key}_mib",
                f"peak RSS, mask {form.label} {side}x{side}",
                peak,
                "MiB",
                target=target,
            ),
            Figure(
                f"mask_memory_{form.key}_naive_mib", "  same file, mask step before #23", naive["peak_rss_mb"], "MiB"
            ),
        ]
        details["forms"][form.key] = {"side": side, "exact": exact, "resize": resized, "naive": naive}
    regions = results[("regions", "")]
    section.figures.append(
        Figure(
            "mask_memory_regions_mib", f"peak RSS, regions drawn at {cap}x{cap}", regions["peak_rss_mb"], "MiB", target
        )
    )
    details["regions"] = regions
    section.details = details
    for result in results.values():
        if not result["hwm_reset"]:
            section.findings.append("the RSS high-water mark could not be reset: a figure may overstate")
            break
    return section


if __name__ == "__main__":
    from bench.report import render_table

    print(render_table([run()]))
