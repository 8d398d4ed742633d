"""A copy is bounded by its deadline while the body streams, and a broken body never becomes an object.

Against the real simulator (its image host) and moto's S3, both over sockets. s3transfer asks the
copier's reader for 8 MiB at a time and takes a short answer for the end of the image, so the
reader must keep to the deadline inside one such read, and must fail (not end) a body that stops
short: otherwise S3 would store the part it got. Multipart uploads start at 8 MiB; sizes above
that are made with the simulator's padding switch.

The time bounds are loose on purpose (a shared 2-core machine): a body that would take 20 s or
more, a limit of 1-3 s, and an assertion a few seconds above the limit.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from vary_region.completion.image_copier import ImageCopier, _LimitedReader
from vary_region.core.errors import ImageCopyError
from vary_region.settings import ImageOrigin

from tests.support.builders import new_job_id
from tests.support.waits import keys_under

pytestmark = pytest.mark.generation_blind

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 8 * MiB
BIG = 64 * MiB  # the copier's size limit in these tests: never the reason a copy fails


class RecordingS3:
    """The S3 client the copier uses, with the multipart calls it made recorded (real moto calls)."""

    def __init__(self) -> None:
        self.client = boto3.client("s3")
        self.calls: list[str] = []
        for name in ("CreateMultipartUpload", "UploadPart", "AbortMultipartUpload", "PutObject"):
            self.client.meta.events.register(f"before-call.s3.{name}", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def parent_url(sim: Any, name: str) -> str:
    # The simulator serves a "parent" picture for any id, no task needed.
    return f"{sim.base_url}/images/{name}/parent.png"


def copier_for(sim: Any, s3: Any, bucket: str, *, timeout: float, **kwargs: Any) -> ImageCopier:
    return ImageCopier(
        s3,
        bucket,
        [ImageOrigin.parse(sim.base_url)],
        max_bytes=BIG,
        timeout_seconds=timeout,
        attempts=kwargs.pop("attempts", 1),
        sleep=lambda _: None,
        **kwargs,
    )


def assert_nothing_stored(s3: Any, bucket: str, prefix: str) -> None:
    assert keys_under(s3, bucket, prefix) == [], "a broken body must never become an object"
    pending = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    assert pending == [], "an abandoned multipart upload must be aborted"


# ---- slow bodies: bounded by the deadline, not by how much s3transfer asks for -------------------


@pytest.mark.parametrize(
    ("padding", "throttle_after", "limit", "multipart"),
    [
        # ~1.3 MB at 50 kB/s: ~26 s of body for a 1 s limit; s3transfer's first read asks for 8 MiB.
        pytest.param(1 * MiB, 0, 1.0, False, id="single-part"),
        # 9 MiB arrive at once (the multipart upload starts, part 1 goes up), then 50 kB/s.
        pytest.param(12 * MiB, 9 * MiB, 3.0, True, id="multipart"),
    ],
)
def test_given_host_trickling_the_body_when_copied_then_it_fails_near_the_limit_and_stores_nothing(
    stack, sim, bucket, padding, throttle_after, limit, multipart
):
    s3 = RecordingS3()
    sim.set_faults(
        image_padding_bytes=padding, image_bytes_per_second=50_000, image_throttle_after_bytes=throttle_after
    )
    prefix = f"results/{new_job_id('trickle')}/"
    copier = copier_for(sim, s3.client, bucket, timeout=limit)

    started = time.monotonic()
    with pytest.raises(ImageCopyError) as failed:
        copier.copy_all({"1": parent_url(sim, "trickle")}, lambda name: f"{prefix}{name}.png")
    took = time.monotonic() - started

    assert "took too long" in str(failed.value)
    assert not failed.value.permanent, "a slow host may be faster next time"
    assert took < limit + 5, f"the copy held on for {took:.1f} s against a {limit} s limit"
    assert_nothing_stored(s3.client, bucket, prefix)
    if multipart:
        assert "CreateMultipartUpload" in s3.calls and "AbortMultipartUpload" in s3.calls, s3.calls
    else:
        assert s3.calls == [], "nothing was sent to S3 for a body that never reached 8 MiB"


def test_given_invocation_deadline_when_host_trickles_then_every_attempt_stops_by_it(stack, sim, bucket):
    """The invocation's own deadline bounds all attempts together, whatever IMAGE_TIMEOUT_SECONDS says."""
    s3 = boto3.client("s3")
    sim.set_faults(image_padding_bytes=1 * MiB, image_bytes_per_second=50_000)
    prefix = f"results/{new_job_id('trickle-deadline')}/"
    copier = copier_for(sim, s3, bucket, timeout=60, attempts=3)
    sources = {name: parent_url(sim, f"trickle-{name}") for name in ("grid", "1", "2", "3", "4")}

    started = time.monotonic()
    with pytest.raises(ImageCopyError):
        copier.copy_all(sources, lambda name: f"{prefix}{name}.png", deadline=started + 1.5)
    took = time.monotonic() - started

    assert took < 6.5, f"the copies held on for {took:.1f} s against a 1.5 s deadline"
    assert_nothing_stored(s3, bucket, prefix)


def test_given_host_slow_to_answer_when_copied_then_the_wait_for_headers_is_bounded_by_the_limit(stack, sim, bucket):
    # The read timeout given to requests (10 s otherwise) must not exceed the time left.
    s3 = boto3.client("s3")
    sim.set_faults(image_delay=20.0)
    prefix = f"results/{new_job_id('no-headers')}/"
    copier = copier_for(sim, s3, bucket, timeout=1.0)

    started = time.monotonic()
    with pytest.raises(ImageCopyError):
        copier.copy_all({"1": parent_url(sim, "no-headers")}, lambda name: f"{prefix}{name}.png")
    took = time.monotonic() - started

    assert took < 6, f"waited {took:.1f} s for headers against a 1 s limit"
    assert_nothing_stored(s3, bucket, prefix)


# ---- short bodies: never stored -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("padding", "multipart"),
    [
        pytest.param(1 * MiB, False, id="single-part"),
        pytest.param(18 * MiB, True, id="multipart"),  # half of it (what arrives) is past 8 MiB
    ],
)
def test_given_body_cut_short_when_copied_then_nothing_is_stored(stack, sim, bucket, padding, multipart):
    s3 = RecordingS3()
    sim.set_faults(image_padding_bytes=padding, image_truncate=True)
    prefix = f"results/{new_job_id('cut')}/"
    copier = copier_for(sim, s3.client, bucket, timeout=30)

    with pytest.raises(ImageCopyError) as failed:
        copier.copy_all({"1": parent_url(sim, "cut")}, lambda name: f"{prefix}{name}.png")

    assert not failed.value.permanent
    assert_nothing_stored(s3.client, bucket, prefix)
    assert ("CreateMultipartUpload" in s3.calls) is multipart, s3.calls
    assert "PutObject" not in s3.calls


class NoLengthEnforcement(requests.Session):
    """A transport that does not itself notice a body ending before its Content-Length (as urllib3
    does by default): the copier's own count is then all that stands between a cut body and S3."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        response = super().get(*args, **kwargs)
        response.raw.enforce_content_length = False
        return response


@pytest.mark.parametrize(
    ("padding", "multipart"),
    [pytest.param(1 * MiB, False, id="single-part"), pytest.param(18 * MiB, True, id="multipart")],
)
def test_given_cut_body_the_transport_does_not_notice_when_copied_then_the_copier_refuses_to_store_it(
    stack, sim, bucket, padding, multipart
):
    s3 = RecordingS3()
    sim.set_faults(image_padding_bytes=padding, image_truncate=True)
    prefix = f"results/{new_job_id('cut-quiet')}/"
    copier = copier_for(sim, s3.client, bucket, timeout=30, session=NoLengthEnforcement())

    with pytest.raises(ImageCopyError) as failed:
        copier.copy_all({"1": parent_url(sim, "cut-quiet")}, lambda name: f"{prefix}{name}.png")

    assert "ended early" in str(failed.value)
    assert_nothing_stored(s3.client, bucket, prefix)
    assert ("CreateMultipartUpload" in s3.calls) is multipart, s3.calls
    assert "PutObject" not in s3.calls


# ---- whole bodies: still copied byte for byte ----------------------------------------------------


@pytest.mark.parametrize("padding", [pytest.param(0, id="plain"), pytest.param(12 * MiB, id="multipart")])
def test_given_healthy_host_when_copied_then_stored_byte_exact(stack, sim, bucket, padding):
    s3 = RecordingS3()
    if padding:
        sim.set_faults(image_padding_bytes=padding)
    url = parent_url(sim, f"whole-{padding}")
    expected = requests.get(url, timeout=30).content
    prefix = f"results/{new_job_id('whole')}/"
    copier = copier_for(sim, s3.client, bucket, timeout=30)

    [copied] = copier.copy_all({"1": url}, lambda name: f"{prefix}{name}.png")

    assert copied.size == len(expected)
    assert s3.client.get_object(Bucket=bucket, Key=copied.key)["Body"].read() == expected
    assert ("CreateMultipartUpload" in s3.calls) is (len(expected) >= MULTIPART_THRESHOLD)


class _GzipHandler(http.server.BaseHTTPRequestHandler):
    """An image host that gzips the body although the copier asked for identity."""

    bodies: dict[str, bytes] = {}

    def do_GET(self) -> None:
        image = self.bodies[self.path]
        encoded = gzip.compress(image, compresslevel=1)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def gzip_host() -> Iterator[tuple[str, dict[str, bytes]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GzipHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _GzipHandler.bodies
    finally:
        server.shutdown()
        server.server_close()


def _image_bytes(size: int) -> bytes:
    # Compressible but not trivially so: a hash stream every 64 bytes, zeros in between.
    block = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() + bytes(32) for i in range(1024))
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize("size", [pytest.param(300 * 1024, id="single-part"), pytest.param(12 * MiB, id="multipart")])
def test_given_host_sending_gzip_when_copied_then_the_decoded_image_is_stored(stack, bucket, gzip_host, size):
    origin, bodies = gzip_host
    image = _image_bytes(size)
    bodies[f"/gz-{size}.png"] = image
    s3 = RecordingS3()
    prefix = f"results/{new_job_id('gzip')}/"
    copier = ImageCopier(s3.client, bucket, [ImageOrigin.parse(origin)], max_bytes=BIG, attempts=1)

    [copied] = copier.copy_all({"1": f"{origin}/gz-{size}.png"}, lambda name: f"{prefix}{name}.png")

    assert copied.size == size
    assert s3.client.get_object(Bucket=bucket, Key=copied.key)["Body"].read() == image
    assert ("CreateMultipartUpload" in s3.calls) is (size >= MULTIPART_THRESHOLD)


# ---- the reader alone: a socket read cannot outlast the deadline ---------------------------------


class _Sock:
    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def settimeout(self, value: float) -> None:
        self.timeouts.append(value)


class _Raw:
    """A body that hands out 1 KiB per read1, the way a socket does when bytes trickle in."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.connection = type("Connection", (), {"sock": _Sock()})()
        self.sizes: list[int] = []

    def read1(self, amount: int) -> bytes:
        self.sizes.append(amount)
        got = min(1024, amount, self.left)
        self.left -= got
        return b"x" * got


def test_given_deadline_nearer_than_the_read_timeout_when_reading_then_the_socket_wait_is_shortened():
    raw = _Raw(total=4096)
    reader = _LimitedReader(raw, BIG, time.monotonic() + 5.0, read_timeout=10.0, declared=4096)

    assert reader.read(8 * MiB) == b"x" * 4096  # filled to the end, not returned short after 1 KiB

    assert raw.connection.sock.timeouts and all(t <= 5.0 for t in raw.connection.sock.timeouts)
    assert max(raw.sizes) <= 64 * 1024, "each sub-read asks for one socket read's worth, not 8 MiB"
    assert reader.read(8 * MiB) == b""
