"""Peak memory of the submit function's mask step, in a process that does nothing else.

Run by bench.mask_memory (and tests/unit/submit/test_mask_memory.py) as a script, in the submit function's
task root with its Lambda environment from template.yaml; prints one JSON line per step measured.

The process first imports the submit handler, as a cold start does, so the figure holds what Lambda
counts against the function's MemorySize: the Python runtime, the layer's imports, Pillow, the mask
file's bytes as read from S3, and the step's own buffers. The step is what the submit function does
with a mask before it pays: `validate_mask`, then `fit_mask` (exact, or resized to the parent) and
the data URL and JSON body that carry the PNG to APIFRAME; or, without a mask, `render_regions` at
the parent's size. `naive` runs the mask step as it was before issue #23 (bench/baseline.py).

A warm-up runs the same step on a small mask of the same form first, so Pillow's plugins and
codecs are loaded before the high-water mark is reset. A process measures one step for the
figures `make bench` judges; the smoke run measures all of its steps in one (a step may then
start from the RSS an earlier one left, which can only overstate). The peak is VmHWM (see
bench/memory_probe.py for why not ru_maxrss), read after the step: `peak_rss_mb` is the whole
process, what Lambda would stop it at; `rss_delta_mb` is the step's own part.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the task root

from bench.memory_probe import current_rss, peak_rss, reset_peak_rss

MiB = 1024 * 1024
MAX_MASK_BYTES = 8 * MiB  # settings.max_mask_bytes' default
REGIONS = {
    "regions": [
        {"rect": [0.1, 0.1, 0.3, 0.2]},
        {"ellipse": [0.6, 0.6, 0.2, 0.15]},
        {"polygon": [[0.1, 0.9], [0.4, 0.5], [0.45, 0.95]]},
    ],
    "units": "fraction",
}


def _send(png: bytes) -> int:
    """What the submitter and the provider adapter do with the fitted mask: a data URL in a JSON body."""
    url = f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"
    return len(json.dumps({"parent_task_id": "probe", "mask": url}, allow_nan=False).encode("utf-8"))


def _file_step(data: bytes, parent: tuple[int, int], resize: bool, naive: bool) -> dict[str, object]:
    from vary_region.core.errors import JobRejected
    from vary_region.submit.mask import MaskFit, fit_mask, validate_mask

    if naive:
        from bench.baseline import naive_mask_step

        return {"rejected": None, "body_bytes": _send(naive_mask_step(data, parent, resize))}
    try:
        mask = validate_mask(data, None, MAX_MASK_BYTES)
        binary = fit_mask(mask, parent, MaskFit.RESIZE if resize else MaskFit.EXACT)
    except JobRejected as rejected:
        return {"rejected": rejected.error.code}
    # The data URL is made from BinaryMask.to_data_url, as the submitter sends it.
    body = json.dumps({"parent_task_id": "probe", "mask": binary.to_data_url()}, allow_nan=False).encode("utf-8")
    return {"rejected": None, "body_bytes": len(body)}


def _regions_step(parent: tuple[int, int]) -> dict[str, object]:
    from vary_region.submit.mask_regions import parse_mask_regions, render_regions

    return {"rejected": None, "body_bytes": _send(render_regions(parse_mask_regions(REGIONS), parent).data)}


def _size_of(data: bytes) -> tuple[int, int]:
    from vary_region.submit.mask_file import image_header_size

    size = image_header_size(data)
    if size is None:
        raise SystemExit("the warm-up file is not a PNG, JPEG or WebP image")
    return size


def measure(step: dict[str, Any]) -> dict[str, Any]:
    """One step: {"parent": [w, h], "mask": path or None, "warmup": path, "resize": bool, "naive": bool}."""
    parent = (int(step["parent"][0]), int(step["parent"][1]))
    resize, naive = bool(step.get("resize")), bool(step.get("naive"))
    data = Path(step["mask"]).read_bytes() if step.get("mask") else b""
    if data:
        warmup = Path(step["warmup"]).read_bytes() if step.get("warmup") else data
        _file_step(warmup, _size_of(warmup), resize=False, naive=naive)
    else:
        _regions_step((64, 64))
    gc.collect()

    rss_before = current_rss()
    hwm_reset = reset_peak_rss()
    started = time.perf_counter()
    outcome = _file_step(data, parent, resize, naive) if data else _regions_step(parent)
    seconds = time.perf_counter() - started
    peak = peak_rss()
    return {
        **outcome,
        "seconds": seconds,
        "mask_bytes": len(data),
        "rss_before_mb": rss_before / MiB,
        "peak_rss_mb": peak / MiB,
        "rss_delta_mb": (peak - rss_before) / MiB,
        # Without the reset the peak may be an earlier step's: it could only overstate.
        "hwm_reset": hwm_reset,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("steps", help="a JSON list of steps, see measure(); one JSON line is printed per step")
    args = parser.parse_args(argv)

    import app  # noqa: F401  the submit handler, as a cold start imports it

    for step in json.loads(args.steps):
        print(json.dumps(measure(step)), flush=True)


if __name__ == "__main__":
    main()
