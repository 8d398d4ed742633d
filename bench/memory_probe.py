"""Peak memory of copying one image, in a process that does nothing else.

Run by bench.copy_bench as `python -m bench.memory_probe ...`; prints one JSON line.

The figure is resident memory (RSS), because that is what a Lambda function's memory limit
counts: it includes what tracemalloc cannot see (buffers that C code allocates with malloc,
memory the allocator keeps after Python frees it). The peak is the kernel's high-water mark of
this address space, VmHWM in /proc/self/status, reset after the warm-up (`echo 5 >
/proc/self/clear_refs`, Linux >= 4.0), minus the RSS just before the copy. Not
`getrusage().ru_maxrss`: Linux carries the *spawning parent's* high-water mark across fork+exec
into it (the benchmark process is larger than this probe), and clearing the mark does not clear
that inherited part, so the copy's own peak would hide below it.
`--tracemalloc` reports the peak of Python's own allocations instead: it shows how much of the
RSS is the copier's buffers, at the cost of slowing the copy (so it runs as a separate probe).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
import tracemalloc
from collections.abc import Callable, Mapping
from pathlib import Path

MiB = 1024 * 1024
CopyAll = Callable[[Mapping[str, str], Callable[[str], str]], object]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise LookupError(f"/proc/self/status has no {field}")


def current_rss() -> int:
    """Resident bytes now."""
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Resident high-water mark of this address space since start or since reset_peak_rss()."""
    return _status_kib("VmHWM") * 1024


def inherited_maxrss() -> int:
    """ru_maxrss, reported for comparison only (see the module docstring)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Make VmHWM start again from the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def copier_for(mode: str, bucket: str, image_hosts: list[str], max_bytes: int) -> CopyAll:
    """The copy under test, bound to moto (AWS_ENDPOINT_URL in the environment) and the image host."""
    from vary_region import wiring

    s3 = wiring.s3_client()  # the client the webhook function uses, with its configuration
    if mode == "naive":
        from bench.baseline import naive_copy_all

        return lambda sources, key_for: naive_copy_all(s3, bucket, sources, key_for)
    from vary_region.completion.image_copier import ImageCopier
    from vary_region.settings import ImageOrigin

    copier = ImageCopier(
        s3, bucket, [ImageOrigin.parse(h) for h in image_hosts], max_bytes=max_bytes, timeout_seconds=120
    )
    return copier.copy_all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("project", "naive"), required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--url", required=True, help="the image to measure")
    parser.add_argument("--warmup-url", required=True, help="a small image on an allowed host")
    parser.add_argument("--image-host", action="append", required=True, help="an allowed image origin")
    parser.add_argument("--bytes", type=int, required=True, help="expected size of the measured image")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--what-if-max-in-memory-chunks",
        type=int,
        metavar="N",
        help="project mode: run the copier with s3transfer's max_in_memory_upload_chunks=N (this process only)",
    )
    args = parser.parse_args(argv)

    if args.what_if_max_in_memory_chunks:
        from vary_region.completion import image_copier

        # boto3's TransferConfig does not take this s3transfer setting as an argument, only as an attribute.
        image_copier._TRANSFER.max_in_memory_upload_chunks = args.what_if_max_in_memory_chunks
    copy_all = copier_for(args.mode, args.bucket, args.image_host, max_bytes=2 * args.bytes)
    # A small copy first loads every module and opens the pools the measured copy needs, so the
    # figure is the copy's own memory, not the cost of its first use.
    copy_all({"warmup": args.warmup_url}, lambda name: f"bench/memory/{args.mode}/{name}.png")
    gc.collect()

    rss_before, peak_before = current_rss(), peak_rss()
    hwm_reset = reset_peak_rss()
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    copy_all({"probe": args.url}, lambda name: f"bench/memory/{args.mode}/{name}.png")
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
    peak_after = peak_rss()

    report = {
        "mode": args.mode,
        "method": "tracemalloc" if args.tracemalloc else "rss",
        "what_if_max_in_memory_chunks": args.what_if_max_in_memory_chunks,
        "bytes": args.bytes,
        "seconds": seconds,
        "rss_before_mb": rss_before / MiB,
        "peak_rss_mb": peak_after / MiB,
        # Without the reset, VmHWM may still be the warm-up's high-water mark: then the copy's
        # peak could hide below it and the delta understates; the report says so.
        "hwm_reset": hwm_reset,
        "peak_before_mb": peak_before / MiB,
        "ru_maxrss_mb": inherited_maxrss() / MiB,
        "rss_delta_mb": (peak_after - rss_before) / MiB,
        "traced_peak_mb": None if traced_peak is None else traced_peak / MiB,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
