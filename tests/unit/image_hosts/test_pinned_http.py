"""The pinned adapter connects to the checked address only, over real sockets on 127.0.0.1.

`cdn.example.invalid` cannot resolve (RFC 6761), so a request that reaches the local server under
that name can only have gone to the pinned address.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from vary_region.core.errors import UnsafeImageUrl
from vary_region.image_hosts.pinned_http import PinnedAddressAdapter
from vary_region.image_hosts.url_policy import CheckedUrl

from tests.support.waits import not_raising

NAME = "cdn.example.invalid"


@dataclass
class LocalHost:
    """A local image host: what it serves, and what reached it (paths, Host headers, TLS names)."""

    port: int = 0
    bodies: dict[str, bytes] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)  # answered first, in order, before the bodies
    requests: list[tuple[str, str]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hosts(self) -> list[str]:
        with self.lock:
            return [host for _, host in self.requests]


def _handler(host: LocalHost) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with host.lock:
                host.requests.append((self.path, self.headers.get("Host", "")))
                status = host.statuses.pop(0) if host.statuses else 200
            body = host.bodies.get(self.path, b"") if status == 200 else b"try later"
            self.send_response(status if self.path in host.bodies else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def local_hosts() -> Iterator[Callable[..., LocalHost]]:
    """start(tls_context=None) -> LocalHost listening on 127.0.0.1; all stopped on leaving."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(tls_context: ssl.SSLContext | None = None) -> LocalHost:
        host = LocalHost()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(host))
        server.daemon_threads = True
        if tls_context is not None:

            def record_name(sock: Any, name: str | None, context: Any) -> None:
                with host.lock:
                    host.server_names.append(name)

            tls_context.sni_callback = record_name
            server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        host.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return host

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture()
def serve() -> Iterator[Callable[..., LocalHost]]:
    with local_hosts() as start:
        yield start


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` only (no IP address in it), and its key; it is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def checked(scheme: str, port: int, address: str = "127.0.0.1", host: str = NAME) -> CheckedUrl:
    return CheckedUrl(f"{scheme}://{host}:{port}/a.png", scheme, host, port, address)


def session_with(adapter: PinnedAddressAdapter) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test's own trusted certificate
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_given_pin_when_requesting_an_unresolvable_name_then_the_checked_address_answers_with_host_kept(serve):
    host = serve()
    host.bodies["/a.png"] = b"image bytes"
    adapter = PinnedAddressAdapter()
    target = checked("http", host.port)

    with adapter.pinned(target):
        response = session_with(adapter).get(target.url, timeout=5)

    assert response.content == b"image bytes"
    assert host.requests == [("/a.png", f"{NAME}:{host.port}")]


def test_given_no_pin_when_requesting_then_refused_and_nothing_reaches_the_host(serve):
    host = serve()
    host.bodies["/a.png"] = b"image bytes"
    session = session_with(PinnedAddressAdapter())

    with pytest.raises(UnsafeImageUrl, match="no checked address"):
        session.get(f"http://127.0.0.1:{host.port}/a.png", timeout=5)

    assert host.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://other.example.invalid:{port}/a.png",  # another host
        "http://cdn.example.invalid:{other}/a.png",  # another port
        "https://cdn.example.invalid:{port}/a.png",  # another scheme
    ],
)
def test_given_pin_for_one_origin_when_requesting_another_then_refused(serve, url):
    host = serve()
    adapter = PinnedAddressAdapter()

    with adapter.pinned(checked("http", host.port)), pytest.raises(UnsafeImageUrl):
        session_with(adapter).get(url.format(port=host.port, other=host.port + 1), timeout=5)

    assert host.requests == []


def test_given_pin_on_one_thread_when_another_thread_requests_then_it_has_no_pin(serve):
    host = serve()
    host.bodies["/a.png"] = b"image bytes"
    adapter = PinnedAddressAdapter()
    target = checked("http", host.port)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            session_with(adapter).get(target.url, timeout=5)
        except BaseException as error:
            errors.append(error)

    with adapter.pinned(target):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=10)

    assert len(errors) == 1 and isinstance(errors[0], UnsafeImageUrl)
    assert host.requests == []


def test_given_a_proxy_when_requesting_then_refused(serve):
    host = serve()
    adapter = PinnedAddressAdapter()
    session = session_with(adapter)
    session.proxies = {"http": f"http://127.0.0.1:{host.port}"}
    target = checked("http", host.port)

    with adapter.pinned(target), pytest.raises(UnsafeImageUrl, match="proxy"):
        session.get(target.url, timeout=5)

    assert host.requests == []


def test_given_tls_host_when_pinned_then_sni_and_certificate_check_use_the_original_name(serve, tmp_path):
    cert, key = self_signed(tmp_path, NAME)
    host = serve(server_context(cert, key))
    host.bodies["/a.png"] = b"tls image"
    adapter = PinnedAddressAdapter()
    session = session_with(adapter)
    session.verify = str(cert)  # trusted, and valid for the name only: never for 127.0.0.1
    target = checked("https", host.port)

    with adapter.pinned(target), not_raising(requests.exceptions.SSLError):
        response = session.get(target.url, timeout=5)

    assert response.content == b"tls image"
    assert host.server_names == [NAME]
    assert host.requests == [("/a.png", f"{NAME}:{host.port}")]


def test_given_tls_host_with_a_certificate_for_another_name_when_pinned_then_the_handshake_fails(serve, tmp_path):
    cert, key = self_signed(tmp_path, "other.example.invalid")
    host = serve(server_context(cert, key))
    adapter = PinnedAddressAdapter()
    session = session_with(adapter)
    session.verify = str(cert)
    target = checked("https", host.port)

    with adapter.pinned(target), pytest.raises(requests.exceptions.SSLError):
        session.get(target.url, timeout=5)

    assert host.requests == []


def test_given_two_names_on_one_address_when_pinned_then_they_do_not_share_a_connection(serve, tmp_path):
    # A connection verified for one name must not carry a request for another name on the same IP.
    cert, key = self_signed(tmp_path, NAME)
    host = serve(server_context(cert, key))
    host.bodies["/a.png"] = b"tls image"
    adapter = PinnedAddressAdapter()
    session = session_with(adapter)
    session.verify = str(cert)

    with adapter.pinned(checked("https", host.port)), not_raising(requests.exceptions.SSLError):
        session.get(checked("https", host.port).url, timeout=5).close()
    other = checked("https", host.port, host="other.example.invalid")
    with adapter.pinned(other), pytest.raises(requests.exceptions.SSLError):
        session.get(other.url, timeout=5)

    assert host.hosts() == [f"{NAME}:{host.port}"]


def test_given_ipv6_checked_address_when_host_header_is_made_then_the_name_is_used_not_the_address():
    target = CheckedUrl("https://cdn.example.invalid/a.png", "https", NAME, 443, str(ipaddress.ip_address("::1")))
    assert target.host_header == NAME
    assert CheckedUrl("http://[::1]:8123/a.png", "http", "::1", 8123, "::1").host_header == "[::1]:8123"
