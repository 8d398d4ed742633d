"""Copy result images from the provider's CDN into S3: streamed, in parallel, bounded in size and time.

An image never sits whole in memory: the HTTP body is read in chunks straight into an S3
(multipart, for large images) upload, through a reader that enforces the size and time limits.
Each download connects only to the address the URL policy checked (pinned_http).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

from vary_region.core.errors import ImageCopyError
from vary_region.image_hosts.url_policy import (
    AddressRule,
    CheckedUrl,
    Resolver,
    check_image_url,
    is_public_address,
    resolve_host,
)
from vary_region.observability import logger, tracer
from vary_region.settings import ImageOrigin

if TYPE_CHECKING:  # imported on first use: the handlers' import path (and cold start) stays lean
    import requests

    from vary_region.image_hosts.pinned_http import PinnedAddressAdapter

# One socket read at most per sub-read: the deadline is looked at between them, so a host that
# trickles bytes cannot hold a copy much past its limit however much s3transfer asks for at once.
_SUB_READ = 64 * 1024
_CONNECT_TIMEOUT = 3.05
_READ_TIMEOUT = 10.0
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
    """A file-like view of an HTTP body that fails the copy when it grows too large, too slow or short.

    s3transfer takes a short read for the end of the object and then stores what it has, so every
    failure is raised from read() itself: the upload is abandoned before S3 holds an object.
    """

    def __init__(self, raw: Any, max_bytes: int, deadline: float, read_timeout: float, declared: int | None) -> None:
        self._raw = raw
        self._read1: Callable[[int], bytes] = getattr(raw, "read1", None) or raw.read
        self._max_bytes = max_bytes
        self._deadline = deadline
        self._socket_timeout = read_timeout
        self._declared = declared
        self._ended = False
        self.size = 0

    def read(self, size: int | None = -1) -> bytes:
        # "Everything" is one byte past the limit: enough to tell an oversized body.
        wanted = self._max_bytes + 1 - self.size if size is None or size < 0 else size
        parts: list[bytes] = []
        got = 0
        while got < wanted and not self._ended:
            self._limit_socket_wait(self._time_left())
            chunk = self._read_some(min(_SUB_READ, wanted - got))
            if not chunk:
                self._ended = True
                self._check_complete()
                break
            parts.append(chunk)
            got += len(chunk)
            self.size += len(chunk)
            if self.size > self._max_bytes:
                raise ImageCopyError(f"the image is larger than {self._max_bytes} bytes", permanent=True)
        return b"".join(parts)

    def _time_left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ImageCopyError("the image download took too long")
        return left

    def _limit_socket_wait(self, left: float) -> None:
        """A single socket read must not outlast the deadline either (a host that stops sending)."""
        if left >= self._socket_timeout:
            return
        sock = getattr(getattr(self._raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(left)
            self._socket_timeout = left

    def _read_some(self, amount: int) -> bytes:
        try:
            return self._read1(amount)
        except Exception as error:  # urllib3's timeouts and broken-connection errors
            if time.monotonic() >= self._deadline:
                raise ImageCopyError("the image download took too long") from None
            raise ImageCopyError(f"the image download broke off ({type(error).__name__})") from None

    def _check_complete(self) -> None:
        if self._declared is not None and self.size != self._declared:
            raise ImageCopyError(f"the image download ended early ({self.size} of {self._declared} bytes)")


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
        address_allowed: AddressRule = is_public_address,
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
        self._address_allowed = address_allowed

    @functools.cached_property
    def _transport(self) -> tuple[requests.Session, PinnedAddressAdapter]:
        from vary_region.image_hosts.pinned_http import pinned_session

        return pinned_session(self._given_session, pool_maxsize=10)

    @tracer.capture_method(capture_response=False)
    def copy_all(
        self,
        sources: Mapping[str, str],
        key_for: Callable[[str], str],
        deadline: float | None = None,
        *,
        optional: Mapping[str, str] | None = None,
    ) -> list[CopiedImage]:
        """Copy every image (name -> URL) in parallel; raise ImageCopyError unless all succeeded.

        deadline: a time.monotonic() value the copies must end by (the invocation's own limit).
        optional: images copied alongside (in the same pool) whose failure only leaves them out.
        """
        if not sources:
            raise ImageCopyError("the provider returned no result images", permanent=True)
        # Refuse the whole set before any byte is fetched; the addresses found here are the only
        # ones the downloads (retries included) connect to.
        checked = {
            name: check_image_url(url, self._allowed, self._resolver, address_allowed=self._address_allowed)
            for name, url in sources.items()
        }
        extras: dict[str, CheckedUrl] = {}
        for name, url in (optional or {}).items():
            try:
                extras[name] = check_image_url(
                    url, self._allowed, self._resolver, address_allowed=self._address_allowed
                )
            except ImageCopyError as exc:  # refused, or its host not found just now: left out either way
                logger.warning("optional image refused", extra={"image": name, "reason": str(exc)})
        _ = self._transport  # created once, here, before the copy threads share it
        workers = min(6, len(checked) + len(extras))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-copy") as pool:
            futures = {
                name: pool.submit(self._copy_with_retries, name, target, key_for(name), deadline)
                for name, target in (checked | extras).items()
            }
        failures: list[ImageCopyError] = []
        copied: list[CopiedImage] = []
        for name, future in futures.items():
            error = future.exception()
            if error is None:
                copied.append(future.result())
            elif name in extras and name not in checked:
                logger.warning("optional image not copied", extra={"image": name, "reason": str(error)})
            elif isinstance(error, ImageCopyError):
                failures.append(ImageCopyError(f"{name}: {error}", permanent=error.permanent))
            else:
                failures.append(ImageCopyError(f"{name}: {type(error).__name__}: {error}"))
        if failures:
            message = "; ".join(str(f) for f in failures)
            raise ImageCopyError(message, permanent=any(f.permanent for f in failures))
        return copied

    def _copy_with_retries(self, name: str, target: CheckedUrl, key: str, deadline: float | None) -> CopiedImage:
        for attempt in range(1, self._attempts + 1):
            if deadline is not None and time.monotonic() >= deadline:
                raise ImageCopyError("no time left in this invocation; the copy is retried later")
            try:
                return self._copy_once(name, target, key, deadline)
            except ImageCopyError as error:
                if error.permanent or attempt == self._attempts:
                    raise
            except Exception as error:  # connection resets, S3 hiccups
                if attempt == self._attempts:
                    raise ImageCopyError(f"download failed ({type(error).__name__})") from None
            pause = min(0.2 * 2**attempt, 2.0)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            self._sleep(pause)
        raise AssertionError("unreachable")

    def _copy_once(self, name: str, target: CheckedUrl, key: str, until: float | None) -> CopiedImage:
        deadline = time.monotonic() + self._timeout
        deadline = deadline if until is None else min(deadline, until)
        left = deadline - time.monotonic()
        if left <= 0:
            raise ImageCopyError("the image download took too long")
        # Neither waiting for the connection nor for any one socket read may outlast the deadline.
        read_timeout = min(_READ_TIMEOUT, left)
        session, adapter = self._transport
        # Redirects are not followed: a redirect could lead off the allowlist (and has no checked address).
        # identity: ask for the image bytes themselves, so Content-Length is what the copy must count.
        with (
            adapter.pinned(target),
            session.get(
                target.url,
                stream=True,
                timeout=(min(_CONNECT_TIMEOUT, left), read_timeout),
                allow_redirects=False,
                headers={"Accept-Encoding": "identity"},
            ) as response,
        ):
            if response.status_code != 200:
                permanent = response.status_code not in _RETRYABLE_STATUS
                raise ImageCopyError(f"the image host answered {response.status_code}", permanent=permanent)
            declared = response.headers.get("Content-Length", "")
            if not declared.isdigit() and "chunked" not in response.headers.get("Transfer-Encoding", "").lower():
                # Ended only by closing the connection: a cut-off body would look whole (urllib3 checks
                # Content-Length and chunk framing, nothing else), so such a body is never stored.
                raise ImageCopyError("the image host sent neither Content-Length nor chunked framing", permanent=True)
            if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
                declared = ""  # the length of an encoded body says nothing about the decoded image
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise ImageCopyError(f"the image is larger than {self._max_bytes} bytes", permanent=True)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not content_type.startswith("image/"):
                content_type = "image/png"
            # Hosts may gzip the body; S3 must receive the image bytes, not the encoding.
            response.raw.decode_content = True
            reader = _LimitedReader(
                response.raw, self._max_bytes, deadline, read_timeout, int(declared) if declared.isdigit() else None
            )
            self._s3.upload_fileobj(
                reader, self._bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )
        return CopiedImage(name=name, key=key, source_url=target.url, size=reader.size, content_type=content_type)
