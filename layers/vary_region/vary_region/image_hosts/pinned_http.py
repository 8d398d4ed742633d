"""HTTP connections to the address the URL policy approved, not to whatever DNS says next.

requests resolves a URL's host itself when it connects; between the policy's check and that
second lookup, a short-lived DNS answer could switch to an internal address (DNS rebinding). The
adapter here opens the connection to the checked IP instead, while the request still names the
original host: Host header, TLS server name (SNI) and certificate hostname check all use it.

The pin travels per thread (requests calls the adapter on the caller's thread), so the copier's
parallel downloads on one shared session never see each other's addresses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from requests import PreparedRequest, Session
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3.connectionpool import HTTPConnectionPool

from vary_region.core.errors import ImageCopyError, UnsafeImageUrl
from vary_region.image_hosts.url_policy import CheckedUrl

T = TypeVar("T")
_PREFIX_STEP = 4096  # small reads: an image header is usually in the first few kilobytes
_PARTIAL_OR_WHOLE = (206, 200)  # a host that ignores Range answers 200 with the whole body: read its start


class PinnedAddressAdapter(HTTPAdapter):
    """A transport adapter that only connects inside `pinned(checked)`, and only to checked.address."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._local = threading.local()

    @contextmanager
    def pinned(self, checked: CheckedUrl) -> Iterator[None]:
        previous = getattr(self._local, "checked", None)
        self._local.checked = checked
        try:
            yield
        finally:
            self._local.checked = previous

    def _checked_for(self, request: PreparedRequest) -> CheckedUrl:
        checked: CheckedUrl | None = getattr(self._local, "checked", None)
        parts = urlsplit(request.url or "")
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or (443 if scheme == "https" else 80)
        # Anything but the very URL that was checked (another host, a followed redirect, a request
        # made outside pinned()) has no approved address: refusing is the only safe answer.
        if checked is None or (checked.scheme, checked.host, checked.port) != (scheme, host, port):
            raise UnsafeImageUrl(f"no checked address for {scheme}://{host}:{port}; not connecting")
        return checked

    def get_connection_with_tls_context(
        self,
        request: PreparedRequest,
        verify: bool | str,
        proxies: dict[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> HTTPConnectionPool:
        checked = self._checked_for(request)
        if select_proxy(request.url or "", proxies or {}):
            # A proxy would make its own connection, to wherever it resolves the host.
            raise UnsafeImageUrl("image downloads do not go through a proxy: the checked address would not hold")
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        host_params = host_params | {"host": checked.address, "port": checked.port}
        if checked.scheme == "https":
            # Pools are keyed by these too, so two names sharing one IP never share a connection.
            pool_kwargs = pool_kwargs | {"server_hostname": checked.host, "assert_hostname": checked.host}
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def add_headers(self, request: PreparedRequest, **kwargs: Any) -> None:
        # http.client would otherwise name the connection's host, i.e. the IP, in Host.
        request.headers["Host"] = self._checked_for(request).host_header


def pinned_session(session: Session | None = None, pool_maxsize: int = 10) -> tuple[Session, PinnedAddressAdapter]:
    """A session whose every http(s) connection goes through a PinnedAddressAdapter.

    Mounted on a given session too: no download may connect to an address nobody checked.
    """
    from vary_region.observability import traced_http_session

    session = session or traced_http_session()
    adapter = PinnedAddressAdapter(pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session, adapter


def read_prefix(
    session: Session,
    adapter: PinnedAddressAdapter,
    target: CheckedUrl,
    parse: Callable[[bytes], T | None],
    *,
    max_bytes: int = 64 * 1024,
    timeout: float = 5.0,
) -> tuple[T | None, int]:
    """Ask for the first `max_bytes` of target (a Range request) and read only until `parse` makes
    something of what has arrived; return that (None if it never did) and the bytes read.

    The body is never read past what parse needed, nor past max_bytes, whatever the host sends; nor
    for longer than `timeout` in all, however slowly it sends (ImageCopyError, not permanent).
    """
    deadline = time.monotonic() + timeout
    with (
        adapter.pinned(target),
        session.get(
            target.url,
            stream=True,
            timeout=(min(3.05, timeout), timeout),
            allow_redirects=False,  # a redirect has no checked address
            headers={"Range": f"bytes=0-{max_bytes - 1}", "Accept-Encoding": "identity"},
        ) as response,
    ):
        if response.status_code not in _PARTIAL_OR_WHOLE:
            raise ImageCopyError(
                f"the image host answered {response.status_code}",
                permanent=response.status_code not in (404, 408, 429, 500, 502, 503, 504),  # as the copier's
            )
        head = b""
        while len(head) < max_bytes:
            chunk = _read_some(response.raw, min(_PREFIX_STEP, max_bytes - len(head)), deadline)
            if not chunk:
                break
            head += chunk
            parsed = parse(head)
            if parsed is not None:
                return parsed, len(head)
        return None, len(head)


def _read_some(raw: Any, amount: int, deadline: float) -> bytes:
    """At most `amount` bytes of the body, whatever has arrived, from one socket read that may not wait
    past the deadline: a host trickling a byte at a time cannot hold the read longer than that.
    (urllib3's read(amount) waits until all `amount` bytes have come, each socket read under its own
    timeout: a trickle would keep it going for minutes.)"""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ImageCopyError("the image host took too long")
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None and (sock.gettimeout() is None or sock.gettimeout() > left):
        sock.settimeout(left)
    try:
        chunk: bytes = raw.read1(amount)
    except Exception as error:  # urllib3's timeouts and broken-connection errors
        if time.monotonic() >= deadline:
            raise ImageCopyError("the image host took too long") from None
        raise ImageCopyError(f"the image read broke off ({type(error).__name__})") from None
    return chunk
