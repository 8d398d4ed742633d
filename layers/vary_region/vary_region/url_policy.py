"""Which result-image URLs may be fetched: https from allowed hosts only, never an internal address.

The URLs come from the provider (or from whoever knows a webhook secret), so they are untrusted:
without this check the webhook function could be pointed at the instance metadata service or at
anything else inside the VPC.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from vary_region.errors import UnsafeImageUrl
from vary_region.settings import ImageOrigin

Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


def check_image_url(url: str, allowed: Sequence[ImageOrigin], resolver: Resolver = resolve_host) -> None:
    """Raise UnsafeImageUrl unless url is on the allowlist and resolves only to public addresses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeImageUrl("the image URL is malformed") from None
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        raise UnsafeImageUrl("the image URL has no host, or carries credentials")
    origin = _matching_origin(parts.scheme, host, port, allowed)
    if origin is None:
        raise UnsafeImageUrl(f"image host {parts.scheme}://{host} is not in the allowed list")
    if origin.is_loopback:
        return  # the local stack's simulator, admitted explicitly by origin (scheme, host and port)
    if _is_ip_literal(host):
        raise UnsafeImageUrl("image URLs must name a host, not an IP address")
    try:
        addresses = resolver(host, port or 443)
    except OSError:
        raise UnsafeImageUrl(f"image host {host} does not resolve") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            raise UnsafeImageUrl(f"image host {host} resolves to a non-public address")


def check_connected_address(url: str, address: str | None, allowed: Sequence[ImageOrigin]) -> None:
    """The address the download actually connected to must be public too.

    The host is resolved once by check_image_url and again when connecting; a DNS answer that
    changes in between (rebinding) must not smuggle in an internal address.
    """
    if address is None:
        return  # the transport does not expose it; the pre-connect check stands
    parts = urlsplit(url)
    origin = _matching_origin(parts.scheme, (parts.hostname or "").lower(), parts.port, allowed)
    if origin is not None and origin.is_loopback:
        return
    if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
        raise UnsafeImageUrl("the image host connected to a non-public address")


def _matching_origin(scheme: str, host: str, port: int | None, allowed: Sequence[ImageOrigin]) -> ImageOrigin | None:
    for origin in allowed:
        if origin.scheme != scheme or origin.host != host:
            continue
        default_port = 443 if scheme == "https" else 80
        if (origin.port or default_port) == (port or default_port):
            return origin
    return None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return True
    # Resolvers also read legacy IPv4 forms ("127.1", "2130706433", "0x7f000001") as addresses.
    if not all(part.isdigit() or part.lower().startswith("0x") for part in host.split(".")):
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True
