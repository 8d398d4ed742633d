"""Which result-image URLs may be fetched: https from allowed hosts only, never an internal address.

The URLs come from the provider (or from whoever knows a webhook secret), so they are untrusted:
without this check the webhook function could be pointed at the instance metadata service or at
anything else inside the VPC. The check resolves the host once and returns the address it
approved; the download connects to that address and no other (see pinned_http), so a DNS answer
that changes between check and connect (rebinding) cannot smuggle in an internal address.

Only an answer refuses a URL for good: a name that does not exist, or one that names a non-public
address. A lookup that got no answer (the resolver timed out or said "try again") says nothing
about the URL, so it fails like an unreachable host does: an ImageCopyError that is not permanent.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from vary_region.core.errors import ImageCopyError, UnsafeImageUrl
from vary_region.settings import ImageOrigin

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressRule = Callable[[IPAddress], bool]

# Ranges Python's is_global (3.13) still calls global, but a download must never reach.
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "192.0.0.0/24",  # IETF protocol assignments (is_global admits 192.0.0.9 and .10)
        "192.88.99.0/24",  # 6to4 relay anycast
    )
)
# NAT64 gateways translate to any IPv4 address, the VPC's own included, and nothing proves that
# the translation lands where the embedded address says: refused whatever that address is.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2002::/16",  # 6to4: the IPv4 relay it names is unchecked
        "2001::/32",  # Teredo, likewise
        "3fff::/20",  # documentation (RFC 9637), unknown to Python 3.13
    )
)
# Every unicast address the internet routes today lies in 2000::/3; anything else is reserved,
# local, site-local or multicast.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# getaddrinfo's answers that the name has no address: "no such name" and, where the platform tells
# it apart, "the name exists but has no address". Every other failure (EAI_AGAIN, EAI_FAIL, a
# resolver that cannot be reached) is the lookup's trouble, not the URL's.
_NO_SUCH_NAME = frozenset(code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None)


def resolve_host(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


def is_public_address(ip: IPAddress) -> bool:
    """True only for a unicast address on the public internet, also when IPv4 hides inside IPv6."""
    if isinstance(ip, ipaddress.IPv4Address):
        if ip.is_multicast or any(ip in net for net in _REFUSED_V4):
            return False
        return ip.is_global
    if any(ip in net for net in _NAT64):
        return False
    embedded = ip.ipv4_mapped
    if embedded is None and ip in _IPV4_COMPATIBLE and int(ip) > 1:  # ::a.b.c.d, not :: or ::1
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        return is_public_address(embedded)
    if ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _REFUSED_V6):
        return False
    return ip.is_global


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the policy, and the address its download must connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _default_port(self.scheme) else f"{host}:{self.port}"


def check_image_url(
    url: str,
    allowed: Sequence[ImageOrigin],
    resolver: Resolver = resolve_host,
    *,
    address_allowed: AddressRule = is_public_address,
) -> CheckedUrl:
    """Raise UnsafeImageUrl unless url is on the allowlist and resolves only to allowed addresses.

    The host is resolved here, once; the answer is the address the download connects to. A lookup
    that fails without saying the name does not exist raises ImageCopyError (not permanent): retry.
    """
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
    port = port or _default_port(parts.scheme)
    if origin.is_loopback:
        # The local stack's simulator, admitted explicitly by origin (scheme, host and port).
        return CheckedUrl(url, parts.scheme, host, port, _loopback_address(host, port, resolver))
    if _is_ip_literal(host):
        raise UnsafeImageUrl("image URLs must name a host, not an IP address")
    addresses = _resolve(host, port, resolver)
    if not addresses:
        raise UnsafeImageUrl(f"image host {host} does not resolve")
    for address in addresses:
        if not address_allowed(_parse_address(address)):
            raise UnsafeImageUrl(f"image host {host} resolves to a non-public address")
    return CheckedUrl(url, parts.scheme, host, port, addresses[0].split("%", 1)[0])


def _resolve(host: str, port: int, resolver: Resolver) -> list[str]:
    try:
        return resolver(host, port)
    except socket.gaierror as error:
        if error.errno in _NO_SUCH_NAME:
            raise UnsafeImageUrl(f"image host {host} does not resolve") from None
        raise ImageCopyError(f"image host {host} could not be looked up just now ({error})") from None
    except OSError as error:
        raise ImageCopyError(f"image host {host} could not be looked up just now ({error})") from None


def _parse_address(address: str) -> IPAddress:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise UnsafeImageUrl("the image host resolved to something that is not an address") from None


def _loopback_address(host: str, port: int, resolver: Resolver) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    addresses = _resolve(host, port, resolver)  # "localhost": whatever it names must be loopback too
    if not addresses or not all(_parse_address(a).is_loopback for a in addresses):
        raise UnsafeImageUrl(f"image host {host} resolves to a non-loopback address")
    return addresses[0].split("%", 1)[0]


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _matching_origin(scheme: str, host: str, port: int | None, allowed: Sequence[ImageOrigin]) -> ImageOrigin | None:
    for origin in allowed:
        if origin.scheme != scheme or origin.host != host:
            continue
        default_port = _default_port(scheme)
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
