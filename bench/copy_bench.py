"""Result-image copies: the project's copier against a naive baseline, for time and for memory.

Both copy from the simulator's image host (its latency, bandwidth cap and padding switches) into
moto's S3 over HTTP, both served by bench.servers in another process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.baseline import naive_copy_all
from bench.report import Figure, Section
from bench.servers import BUCKET, REPO_ROOT, Servers

MiB = 1024 * 1024
COPY_TARGET_RATIO = 0.35
PARALLEL_TARGET_RATIO = 1.25  # five images in parallel against the slowest of them alone
RESULT_NAMES = ("grid", "1", "2", "3", "4")
MEMORY_TARGET_MIB = 32.0
WHAT_IF_CHUNKS = 2  # the suspected fix, measured when the memory target is missed
PNG_CHUNK_OVERHEAD = 12  # the simulator pads with one PNG chunk, which costs at least this much


@dataclass(frozen=True)
class CopySettings:
    images: int
    image_bytes: int
    latency_seconds: float
    bytes_per_second: float
    repeats: int
    probe_bytes: int


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _size(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size / 1024:g} KiB"


def _padding_for(servers: Servers, name: str, size: int) -> int:
    """Padding that makes the picture `name` exactly `size` bytes on the image host."""
    padding = size - servers.picture_bytes(servers.image_host, name)
    if padding < PNG_CHUNK_OVERHEAD:
        raise ValueError(f"{size} bytes is smaller than the simulator's picture plus a padding chunk")
    return padding


def _timed(action: Callable[[int], object], run: int) -> float:
    started = time.perf_counter()
    action(run)
    return time.perf_counter() - started


def _check_sizes(s3: Any, keys: list[str], size: int) -> None:
    """A fast copy that stored the wrong bytes would be a meaningless figure."""
    for key in keys:
        stored = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
        if stored != size:
            raise AssertionError(f"s3://{BUCKET}/{key} holds {stored} bytes, expected {size}")


def copy_time(servers: Servers, settings: CopySettings) -> Section:
    from vary_region import wiring
    from vary_region.completion.image_copier import ImageCopier
    from vary_region.settings import ImageOrigin

    section = Section("copy time")
    names = [str(i) for i in range(1, settings.images + 1)]
    # Padding applies to every image of the host alike, so all URLs name one picture (the query only
    # makes them distinct; the simulator ignores it). Measuring its size also renders it now, which
    # keeps PIL out of the timed copies.
    picture = servers.image_url(servers.image_host, "copy")
    sources = {name: f"{picture}?image={name}" for name in names}
    padding = _padding_for(servers, "copy", settings.image_bytes)
    servers.set_faults(
        image_delay=settings.latency_seconds,
        image_bytes_per_second=settings.bytes_per_second,
        image_padding_bytes=padding,
    )
    with patched_environ(servers.aws_environment()):
        s3 = wiring.s3_client()  # the webhook function's own client configuration
        copier = ImageCopier(
            s3, BUCKET, [ImageOrigin.parse(servers.image_host)], max_bytes=2 * settings.image_bytes, timeout_seconds=60
        )
        project: list[float] = []
        naive: list[float] = []

        def project_copy(run: int) -> None:
            copier.copy_all(sources, lambda name: f"bench/project/{run}/{name}.png")

        def naive_copy(run: int) -> None:
            naive_copy_all(s3, BUCKET, sources, lambda name: f"bench/naive/{run}/{name}.png")

        for run in range(settings.repeats):  # interleaved, so a noisy moment hurts both alike
            project.append(_timed(project_copy, run))
            naive.append(_timed(naive_copy, run))
        last = [f"bench/{way}/{settings.repeats - 1}/{name}.png" for way in ("project", "naive") for name in names]
        _check_sizes(s3, last, settings.image_bytes)
        parallel = _five_against_slowest(servers, settings, copier, s3)
    servers.set_faults(image_delay=0, image_bytes_per_second=None, image_padding_bytes=0)

    project_s, naive_s = statistics.median(project), statistics.median(naive)
    per_image = settings.latency_seconds + settings.image_bytes / settings.bytes_per_second
    label = f"{settings.images} x {_size(settings.image_bytes)}"
    section.figures += [
        Figure("copy_project_seconds", f"copy {label}: project copier", project_s, "s"),
        Figure("copy_baseline_seconds", f"copy {label}: naive baseline", naive_s, "s"),
        Figure("copy_ratio", "copy time, project / baseline", project_s / naive_s, "x", target=COPY_TARGET_RATIO),
    ]
    section.details = {
        "images": settings.images,
        "image_bytes": settings.image_bytes,
        "latency_seconds": settings.latency_seconds,
        "bytes_per_second": settings.bytes_per_second,
        "project_seconds": project,
        "naive_seconds": naive,
        # What the image host alone costs: the floor of a sequential copy and of a parallel one.
        "download_floor_sequential_seconds": settings.images * per_image,
        "download_floor_parallel_seconds": per_image,
        "five_against_slowest": parallel,
    }
    five_s, alone_s = statistics.median(parallel["five_seconds"]), statistics.median(parallel["alone_seconds"])
    ratio = five_s / alone_s
    section.figures += [
        Figure("copy_five_seconds", f"copy grid + 4 x {_size(settings.image_bytes)}", five_s, "s"),
        Figure("copy_slowest_alone_seconds", "copy the largest of them alone", alone_s, "s"),
        Figure("copy_five_vs_slowest_ratio", "copy five / largest alone", ratio, "x", target=PARALLEL_TARGET_RATIO),
    ]
    if ratio > PARALLEL_TARGET_RATIO:
        section.findings.append(_parallel_finding(parallel, ratio))
    return section


def _five_against_slowest(servers: Servers, settings: CopySettings, copier: Any, s3: Any) -> dict[str, Any]:
    """Five result images (grid + 4, each its own picture and connection) against the largest one alone,
    same host settings (latency, per-connection bandwidth cap, padding), interleaved in one run.

    When the five take longer, the two halves of a copy are timed apart (downloads alone, in the
    same threads; S3 PutObjects alone, of the same size), so the table can say which one grows."""
    import requests

    servers.set_faults(image_delay=0, image_bytes_per_second=None, image_padding_bytes=0)  # natural sizes first
    pictures = {name: f"parallel-{name}" for name in RESULT_NAMES}
    natural = {name: servers.picture_bytes(servers.image_host, picture) for name, picture in pictures.items()}
    # One padding for all (the switch is per host): the smallest picture comes out at image_bytes.
    padding = settings.image_bytes - min(natural.values())
    if padding < PNG_CHUNK_OVERHEAD:
        raise ValueError(f"{settings.image_bytes} bytes is smaller than the simulator's pictures plus a padding chunk")
    sizes = {name: natural[name] + padding for name in RESULT_NAMES}
    largest = max(RESULT_NAMES, key=lambda name: sizes[name])
    urls = {name: servers.image_url(servers.image_host, picture) for name, picture in pictures.items()}
    servers.set_faults(
        image_delay=settings.latency_seconds,
        image_bytes_per_second=settings.bytes_per_second,
        image_padding_bytes=padding,
    )
    copier.copy_all({largest: urls[largest]}, lambda name: f"bench/parallel/warmup/{name}.png")
    five: list[float] = []
    alone: list[float] = []
    for run in range(settings.repeats):
        five.append(_timed(lambda r: copier.copy_all(urls, lambda n: f"bench/parallel/{r}/five/{n}.png"), run))
        alone.append(
            _timed(lambda r: copier.copy_all({largest: urls[largest]}, lambda n: f"bench/alone/{r}/{n}.png"), run)
        )
    for name in RESULT_NAMES:
        _check_sizes(s3, [f"bench/parallel/{settings.repeats - 1}/five/{name}.png"], sizes[name])

    session = requests.Session()

    def download(url: str) -> None:
        with session.get(url, stream=True, timeout=60) as response:
            while response.raw.read1(64 * 1024):
                pass

    body = b"\0" * sizes[largest]

    def put(key: str) -> None:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType="image/png")

    downloads_five = _timed(lambda _: _in_parallel(download, list(urls.values())), 0)
    downloads_alone = _timed(lambda _: download(urls[largest]), 0)
    puts_five = _timed(lambda _: _in_parallel(put, [f"bench/put/five/{n}" for n in RESULT_NAMES]), 0)
    puts_alone = _timed(lambda _: put("bench/put/alone"), 0)
    return {
        "sizes": sizes,
        "largest": largest,
        "five_seconds": five,
        "alone_seconds": alone,
        "downloads_only_five_seconds": downloads_five,
        "downloads_only_alone_seconds": downloads_alone,
        "s3_puts_only_five_seconds": puts_five,
        "s3_puts_only_alone_seconds": puts_alone,
    }


def _in_parallel(action: Callable[[str], None], items: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


def _parallel_finding(parallel: dict[str, Any], ratio: float) -> str:
    downloads = parallel["downloads_only_five_seconds"] / parallel["downloads_only_alone_seconds"]
    puts_extra = parallel["s3_puts_only_five_seconds"] - parallel["s3_puts_only_alone_seconds"]
    return (
        f"copy five / largest alone is {ratio:.2f}x. Downloads alone: five in parallel take {downloads:.2f}x "
        f"the largest alone. S3 alone: five concurrent PutObjects take {parallel['s3_puts_only_five_seconds']:.3f} s "
        f"against {parallel['s3_puts_only_alone_seconds']:.3f} s for one (+{puts_extra:.3f} s). Images below the "
        "8 MiB multipart threshold are sent in one PutObject once read whole, so five images of one size and "
        "bandwidth reach S3 at the same moment; the local S3 (moto, one Python process that also serves the "
        "image host, bench/servers.py) handles them one after the other. Real S3 takes them in parallel."
    )


def _probe(servers: Servers, mode: str, url: str, warmup_url: str, size: int, *extra: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.memory_probe", "--mode", mode, "--bucket", BUCKET, "--bytes", str(size)]
    command += ["--url", url, "--warmup-url", warmup_url]
    command += ["--image-host", servers.image_host, "--image-host", servers.plain_host, *extra]
    env = os.environ | servers.aws_environment()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe ({mode}) failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def copy_memory(servers: Servers, settings: CopySettings) -> Section:
    from vary_region import wiring

    section = Section("copy memory")
    size = settings.probe_bytes
    url = servers.image_url(servers.image_host, "memory-probe")
    # The padding switch applies to every image of a host, so the warm-up's small picture comes
    # from the other, never-faulted host.
    warmup_url = servers.image_url(servers.plain_host, "memory-warmup")
    servers.picture_bytes(servers.plain_host, "memory-warmup")  # rendered now, not during the probe
    servers.set_faults(image_padding_bytes=_padding_for(servers, "memory-probe", size))
    try:
        project = _probe(servers, "project", url, warmup_url, size)
        naive = _probe(servers, "naive", url, warmup_url, size)
        missed = project["rss_delta_mb"] > MEMORY_TARGET_MIB
        if missed:  # explain the miss: how much is Python's, and what the suspected fix gives
            traced = _probe(servers, "project", url, warmup_url, size, "--tracemalloc")
            what_if = _probe(
                servers, "project", url, warmup_url, size, "--what-if-max-in-memory-chunks", str(WHAT_IF_CHUNKS)
            )
    finally:
        servers.set_faults(image_padding_bytes=0)
    with patched_environ(servers.aws_environment()):
        _check_sizes(wiring.s3_client(), [f"bench/memory/{mode}/probe.png" for mode in ("project", "naive")], size)

    label = _size(size)
    section.figures += [
        Figure(
            "memory_project_mib",
            f"peak RSS copying {label}: project copier",
            project["rss_delta_mb"],
            "MiB",
            target=MEMORY_TARGET_MIB,
        ),
        Figure("memory_baseline_mib", f"peak RSS copying {label}: naive baseline", naive["rss_delta_mb"], "MiB"),
    ]
    section.details = {
        "method": "VmHWM (RSS high-water mark, reset after a warm-up copy) minus VmRSS before the copy, "
        "in a subprocess that does only this copy; see bench/memory_probe.py",
        "project": project,
        "naive": naive,
    }
    for probe in (project, naive):
        if not probe["hwm_reset"]:
            section.findings.append(f"{probe['mode']}: the RSS high-water mark could not be reset; may understate")
    if missed:
        section.details |= {"project_tracemalloc": traced, "project_what_if": what_if}
        section.findings.append(
            f"project copier: +{project['rss_delta_mb']:.1f} MiB RSS copying {label}; Python allocations alone "
            f"peak at {traced['traced_peak_mb']:.1f} MiB (tracemalloc): it holds many 5 MiB parts at once."
        )
        if what_if["rss_delta_mb"] <= MEMORY_TARGET_MIB < project["rss_delta_mb"]:
            section.findings.append(
                "cause: for a non-seekable body, s3transfer reads parts ahead into memory up to "
                "TransferConfig.max_in_memory_upload_chunks (default 10 x multipart_chunksize 5 MiB), whatever "
                f"max_concurrency is. Measured with max_in_memory_upload_chunks={WHAT_IF_CHUNKS} set on "
                f"image_copier._TRANSFER: +{what_if['rss_delta_mb']:.1f} MiB RSS, "
                f"{what_if['seconds']:.2f} s (as is: {project['seconds']:.2f} s)."
            )
    return section
