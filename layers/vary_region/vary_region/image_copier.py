"""Copy result images from the provider's CDN into S3: streamed, in parallel, bounded in size and time.

An image never sits whole in memory: the HTTP body is read in chunks straight into an S3
(multipart, for large images) upload, through a reader that enforces the size and time limits.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

from vary_region.errors import ImageCopyError
from vary_region.observability import traced_http_session, tracer
from vary_region.settings import ImageOrigin

if TYPE_CHECKING:  # imported on first use: the handlers' import path (and cold start) stays lean
    import requests

from vary_region.url_policy import Resolver, check_connected_address, check_image_url, resolve_host

_CHUNK = 256 * 1024
# 5 MiB is S3's smallest multipart part; two parts in flight keep a copy's memory near 10 MiB.
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=2)
# From a non-seekable stream, s3transfer reads ahead up to this many parts (10 by default, ~50 MiB
# per image); the constructor does not take it, so it is set here.
_TRANSFER.max_in_memory_upload_chunks = 2
_RETRYABLE_STATUS = frozenset({404, 408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class CopiedImage:
    """One result image, now in the jobs bucket."""

    name: str
    key: str
    source_url: str
    size: int
    content_type: str


class _LimitedReader:
    """A file-like view of an HTTP body that fails the copy when it grows too large or too slow."""

    def __init__(self, raw: Any, max_bytes: int, deadline: float) -> None:
        self._raw = raw
        self._max_bytes = max_bytes
        self._deadline = deadline
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise ImageCopyError("the image download took too long")
        chunk = self._raw.read(_CHUNK if size is None or size < 0 else size)
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise ImageCopyError(f"the image is larger than {self._max_bytes} bytes", permanent=True)
        return chunk


class ImageCopier:
    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        allowed_origins: Sequence[ImageOrigin],
        *,
        max_bytes: int,
        timeout_seconds: float = 20.0,
        attempts: int = 3,
        session: requests.Session | None = None,
        resolver: Resolver = resolve_host,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._allowed = tuple(allowed_origins)
        self._max_bytes = max_bytes
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._given_session = session
        self._resolver = resolver
        self._sleep = sleep

    @functools.cached_property
    def _session(self) -> requests.Session:
        return self._given_session or traced_http_session()

    @tracer.capture_method(capture_response=False)
    def copy_all(
        self, sources: Mapping[str, str], key_for: Callable[[str], str], deadline: float | None = None
    ) -> list[CopiedImage]:
        """Copy every image (name -> URL) in parallel; raise ImageCopyError unless all succeeded.

        deadline: a time.monotonic() value the copies must end by (the invocation's own limit).
        """
        if not sources:
            raise ImageCopyError("the provider returned no result images", permanent=True)
        for url in sources.values():  # refuse the whole set before any byte is fetched
            check_image_url(url, self._allowed, self._resolver)
        _ = self._session  # created once, here, before the copy threads share it
        with ThreadPoolExecutor(max_workers=min(5, len(sources)), thread_name_prefix="image-copy") as pool:
            futures = {
                name: pool.submit(self._copy_with_retries, name, url, key_for(name), deadline)
                for name, url in sources.items()
            }
        failures: list[ImageCopyError] = []
        copied: list[CopiedImage] = []
        for name, future in futures.items():
            error = future.exception()
            if error is None:
                copied.append(future.result())
            elif isinstance(error, ImageCopyError):
                failures.append(ImageCopyError(f"{name}: {error}", permanent=error.permanent))
            else:
                failures.append(ImageCopyError(f"{name}: {type(error).__name__}: {error}"))
        if failures:
            message = "; ".join(str(f) for f in failures)
            raise ImageCopyError(message, permanent=any(f.permanent for f in failures))
        return copied

    def _copy_with_retries(self, name: str, url: str, key: str, deadline: float | None) -> CopiedImage:
        for attempt in range(1, self._attempts + 1):
            if deadline is not None and time.monotonic() >= deadline:
                raise ImageCopyError("no time left in this invocation; the copy is retried later")
            try:
                return self._copy_once(name, url, key, deadline)
            except ImageCopyError as error:
                if error.permanent or attempt == self._attempts:
                    raise
            except Exception as error:  # connection resets, truncated bodies (urllib3), S3 hiccups
                if attempt == self._attempts:
                    raise ImageCopyError(f"download failed ({type(error).__name__})") from None
            self._sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    def _copy_once(self, name: str, url: str, key: str, until: float | None) -> CopiedImage:
        deadline = time.monotonic() + self._timeout
        deadline = deadline if until is None else min(deadline, until)
        # Redirects are not followed: a redirect could lead off the allowlist.
        # identity: ask for the image bytes themselves, so Content-Length is what the copy must count.
        with self._session.get(
            url,
            stream=True,
            timeout=(3.05, min(10.0, self._timeout)),
            allow_redirects=False,
            headers={"Accept-Encoding": "identity"},
        ) as response:
            check_connected_address(url, _peer_address(response), self._allowed)
            if response.status_code != 200:
                permanent = response.status_code not in _RETRYABLE_STATUS
                raise ImageCopyError(f"the image host answered {response.status_code}", permanent=permanent)
            declared = response.headers.get("Content-Length", "")
            if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                declared = ""  # the length of an encoded body says nothing about the decoded image
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise ImageCopyError(f"the image is larger than {self._max_bytes} bytes", permanent=True)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                content_type = "image/png"
            # Hosts may gzip the body; S3 must receive the image bytes, not the encoding.
            response.raw.decode_content = True
            reader = _LimitedReader(response.raw, self._max_bytes, deadline)
            self._s3.upload_fileobj(
                reader, self._bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )
            if declared.isdigit() and reader.size != int(declared):
                raise ImageCopyError("the image download ended early")
        return CopiedImage(name=name, key=key, source_url=url, size=reader.size, content_type=content_type)


def _peer_address(response: requests.Response) -> str | None:
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else None
    except OSError:
        return None
