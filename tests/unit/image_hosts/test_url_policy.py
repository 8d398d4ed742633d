"""Result-image URLs are untrusted: https, allowed hosts, public addresses only."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from vary_region.core.errors import ImageCopyError, UnsafeImageUrl
from vary_region.image_hosts.url_policy import CheckedUrl, check_image_url, is_public_address
from vary_region.settings import DEFAULT_IMAGE_HOSTS, ImageOrigin

DEFAULT_ORIGINS = tuple(ImageOrigin.parse(h) for h in DEFAULT_IMAGE_HOSTS.split(","))
PUBLIC_V4 = "104.18.20.35"
PUBLIC_V6 = "2606:4700:4700::1111"


class FakeResolver:
    """Answers from a table (like DNS would) and records what it was asked."""

    def __init__(self, answers: dict[str, list[str]] | None = None, default: list[str] | None = None) -> None:
        self.answers = answers or {}
        self.default = [PUBLIC_V4] if default is None else default
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers.get(host, self.default)


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"the resolver must not be consulted for {host}:{port}")


def inet_aton_resolver(host: str, port: int) -> list[str]:
    """What getaddrinfo does with numeric shorthand hosts such as 2130706433 or 0x7f.1: no DNS at all."""
    return [socket.inet_ntoa(socket.inet_aton(host))]


def refused(url: str, allowed=DEFAULT_ORIGINS, resolver=no_dns) -> UnsafeImageUrl:
    with pytest.raises(UnsafeImageUrl) as info:
        check_image_url(url, allowed, resolver)
    assert info.value.permanent  # retrying the same URL can never help
    return info.value


# --- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.apiframe.pro/images/29e9-grid.png",
        "https://cdn.apiframe.ai/images/1.png",
        "https://cdn2.apiframe.ai/images/4.png?sig=abc&exp=123",
        "https://CDN.APIFRAME.PRO/images/1.png",
        "https://cdn.apiframe.pro:443/images/1.png",
    ],
)
def test_given_https_url_on_an_allowed_host_with_public_addresses_when_checked_then_it_is_accepted(url):
    resolver = FakeResolver(default=[PUBLIC_V4, PUBLIC_V6])

    check_image_url(url, DEFAULT_ORIGINS, resolver)

    assert len(resolver.asked) == 1
    host, port = resolver.asked[0]
    assert host.endswith("apiframe.pro") or host.endswith("apiframe.ai")
    assert port == 443


def test_given_custom_allowlist_when_checked_then_only_its_hosts_are_accepted():
    allowed = (ImageOrigin.parse("images.example.com"),)

    check_image_url("https://images.example.com/a.png", allowed, FakeResolver())
    refused("https://cdn.apiframe.pro/a.png", allowed)


# --- refused by scheme, host, port or form ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.apiframe.pro/images/1.png",
        "ftp://cdn.apiframe.pro/images/1.png",
        "file:///etc/passwd",
        "gopher://cdn.apiframe.pro/",
        "//cdn.apiframe.pro/images/1.png",
    ],
)
def test_given_url_that_is_not_https_when_checked_then_it_is_refused(url):
    refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/1.png",
        "https://cdn.apiframe.pro.evil.example/1.png",
        "https://evilcdn.apiframe.pro/1.png",
        "https://apiframe.pro/1.png",
        "https://cdn.apiframe.pro.:443/1.png",
        "https://evil.example/cdn.apiframe.pro/1.png",
        "https://evil.example/?u=https://cdn.apiframe.pro/1.png",
        "https://evil.example#@cdn.apiframe.pro/1.png",
        "https://cdn.apiframe.pro:8443/1.png",
        "https://cdn.apiframe.pro:80/1.png",
    ],
)
def test_given_url_on_another_host_or_port_when_checked_then_it_is_refused(url):
    refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@cdn.apiframe.pro/1.png",
        "https://user@cdn.apiframe.pro/1.png",
        "https://:pass@cdn.apiframe.pro/1.png",
        "https://cdn.apiframe.pro@evil.example/1.png",
        "https://cdn.apiframe.pro\\@evil.example/1.png",
    ],
)
def test_given_url_carrying_credentials_when_checked_then_it_is_refused(url):
    refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "https://",
        "https:///1.png",
        "https://cdn.apiframe.pro:99999/1.png",
        "https://[::1/1.png",
        "https://cdn.apiframe.pro:abc/1.png",
    ],
)
def test_given_malformed_url_when_checked_then_it_is_refused_without_crashing(url):
    refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/1.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/1.png",
        "https://[::1]/1.png",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://2130706433/1.png",  # 127.0.0.1 in decimal
        "https://0x7f000001/1.png",
        "https://0177.0.0.1/1.png",
        "https://127.1/1.png",
        "https://0/1.png",
    ],
)
def test_given_ip_address_url_with_default_allowlist_when_checked_then_it_is_refused(url):
    refused(url, resolver=inet_aton_resolver)


@pytest.mark.parametrize(
    ("entry", "url"),
    [
        ("93.184.216.34", "https://93.184.216.34/1.png"),
        (f"https://[{PUBLIC_V6}]", f"https://[{PUBLIC_V6}]/1.png"),
    ],
)
def test_given_ip_literal_even_on_the_allowlist_when_checked_then_it_is_refused_without_dns(entry, url):
    error = refused(url, allowed=(ImageOrigin.parse(entry),), resolver=no_dns)
    assert "IP" in str(error)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1"])
def test_given_numeric_shorthand_host_on_the_allowlist_when_checked_then_it_is_refused(host):
    # getaddrinfo turns these into 127.0.0.1 without asking DNS; the check must not admit them.
    refused(f"https://{host}/1.png", allowed=(ImageOrigin.parse(host),), resolver=inet_aton_resolver)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1"])
def test_given_numeric_shorthand_host_on_the_allowlist_when_checked_then_it_is_refused_as_an_ip_literal(host):
    refused(f"https://{host}/1.png", allowed=(ImageOrigin.parse(host),), resolver=no_dns)


# --- refused by where the host resolves ------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # instance metadata
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",  # carrier-grade NAT
        "::1",
        "fe80::1%eth0",
        "fd00:ec2::254",  # the IPv6 metadata endpoint
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:10.0.0.1",
    ],
)
def test_given_allowed_host_resolving_to_a_non_public_address_when_checked_then_it_is_refused(address):
    refused("https://cdn.apiframe.pro/1.png", resolver=FakeResolver(default=[address]))


def test_given_allowed_host_resolving_to_public_and_private_addresses_when_checked_then_it_is_refused():
    refused("https://cdn.apiframe.pro/1.png", resolver=FakeResolver(default=[PUBLIC_V4, "10.0.0.7"]))


def failing_lookup(error: OSError):
    """A resolver that fails as getaddrinfo does, with `error`."""

    def resolver(host: str, port: int) -> list[str]:
        raise error

    return resolver


# The answers that say the name has no address: the URL can never be fetched.
NO_SUCH_NAME = [socket.gaierror(socket.EAI_NONAME, "Name or service not known")]
if hasattr(socket, "EAI_NODATA"):
    NO_SUCH_NAME.append(socket.gaierror(socket.EAI_NODATA, "No address associated with hostname"))
# Lookups that got no answer: the URL may well work in a moment.
NO_ANSWER = [
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution"),
    TimeoutError("timed out"),
    OSError("network is unreachable"),
]


@pytest.mark.parametrize("error", NO_SUCH_NAME, ids=lambda e: f"errno{e.errno}")
def test_given_allowed_host_that_does_not_exist_when_checked_then_it_is_refused_for_good(error):
    refused("https://cdn.apiframe.pro/1.png", resolver=failing_lookup(error))


@pytest.mark.parametrize("error", NO_ANSWER, ids=lambda e: f"{type(e).__name__}-{e.errno}")
def test_given_a_lookup_that_fails_for_a_moment_when_checked_then_it_fails_like_an_unreachable_host(error):
    with pytest.raises(ImageCopyError) as info:
        check_image_url("https://cdn.apiframe.pro/1.png", DEFAULT_ORIGINS, failing_lookup(error))

    assert not isinstance(info.value, UnsafeImageUrl), "nothing is wrong with the URL"
    assert not info.value.permanent, "retried, as a slow or unreachable image host is"
    assert "cdn.apiframe.pro" in str(info.value)


@pytest.mark.parametrize(("code", "permanent"), [(socket.EAI_NONAME, True), (socket.EAI_AGAIN, False)])
def test_given_the_system_resolver_failing_when_checked_by_default_then_only_no_such_name_is_permanent(
    monkeypatch, code, permanent
):
    def getaddrinfo(*args, **kwargs):
        raise socket.gaierror(code, "simulated")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    with pytest.raises(ImageCopyError) as info:
        check_image_url("https://cdn.apiframe.pro/1.png", DEFAULT_ORIGINS)

    assert (info.value.permanent, isinstance(info.value, UnsafeImageUrl)) == (permanent, permanent)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [(NO_SUCH_NAME[0], True), (NO_ANSWER[0], False)],
    ids=["no-such-name", "try-again"],
)
def test_given_localhost_origin_whose_lookup_fails_when_checked_then_only_no_such_name_is_permanent(error, permanent):
    allowed = (ImageOrigin.parse("http://localhost:8123"),)

    with pytest.raises(ImageCopyError) as info:
        check_image_url("http://localhost:8123/a.png", allowed, failing_lookup(error))

    assert info.value.permanent is permanent
    assert isinstance(info.value, UnsafeImageUrl) is permanent


# --- the local stack's explicit loopback origin ----------------------------------------------------

LOCAL = (*DEFAULT_ORIGINS, ImageOrigin.parse("http://127.0.0.1:8123"))


def test_given_explicit_loopback_origin_when_its_url_is_checked_then_it_is_accepted_without_dns():
    check_image_url("http://127.0.0.1:8123/images/t1/grid.png", LOCAL, no_dns)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8124/images/1.png",  # another port
        "http://127.0.0.1/images/1.png",  # the default port
        "https://127.0.0.1:8123/images/1.png",  # another scheme
        "http://localhost:8123/images/1.png",  # another host name
        "http://127.0.0.2:8123/images/1.png",
        "http://[::1]:8123/images/1.png",
        "http://169.254.169.254:8123/latest/meta-data/",
    ],
)
def test_given_explicit_loopback_origin_when_a_neighbouring_url_is_checked_then_it_is_refused(url):
    refused(url, allowed=LOCAL)


def test_given_explicit_loopback_origin_when_cdn_urls_are_checked_then_they_still_need_https_and_public_dns():
    check_image_url("https://cdn.apiframe.pro/1.png", LOCAL, FakeResolver())
    refused("http://cdn.apiframe.pro/1.png", allowed=LOCAL)
    refused("https://cdn.apiframe.pro/1.png", allowed=LOCAL, resolver=FakeResolver(default=["127.0.0.1"]))


# --- the address that passed is the one to connect to -------------------------------------------


def test_given_accepted_url_when_checked_then_the_first_checked_address_is_returned_for_connecting():
    resolver = FakeResolver(default=[PUBLIC_V6, PUBLIC_V4])

    checked = check_image_url("https://CDN.apiframe.pro/images/1.png?sig=a", DEFAULT_ORIGINS, resolver)

    assert checked == CheckedUrl(
        url="https://CDN.apiframe.pro/images/1.png?sig=a",
        scheme="https",
        host="cdn.apiframe.pro",
        port=443,
        address=PUBLIC_V6,
    )
    assert checked.host_header == "cdn.apiframe.pro"
    assert len(resolver.asked) == 1


def test_given_explicit_loopback_origin_when_checked_then_its_own_address_is_returned_without_dns():
    checked = check_image_url("http://127.0.0.1:8123/images/t1/grid.png", LOCAL, no_dns)

    assert (checked.address, checked.port, checked.host_header) == ("127.0.0.1", 8123, "127.0.0.1:8123")


def test_given_localhost_origin_when_checked_then_it_must_resolve_to_loopback_only():
    allowed = (ImageOrigin.parse("http://localhost:8123"),)

    checked = check_image_url("http://localhost:8123/a.png", allowed, FakeResolver(default=["::1", "127.0.0.1"]))
    assert checked.address == "::1"
    refused("http://localhost:8123/a.png", allowed, FakeResolver(default=["127.0.0.1", PUBLIC_V4]))


def test_given_resolver_answering_nothing_when_checked_then_refused():
    refused("https://cdn.apiframe.pro/1.png", resolver=FakeResolver(default=[]))


def test_given_relaxed_address_rule_when_checked_then_it_decides_instead_of_the_public_rule():
    def loopback_too(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return ip.is_loopback or is_public_address(ip)

    resolver = FakeResolver(default=["127.0.0.1"])
    checked = check_image_url("https://cdn.apiframe.pro/1.png", DEFAULT_ORIGINS, resolver, address_allowed=loopback_too)

    assert checked.address == "127.0.0.1"
    refused("https://cdn.apiframe.pro/1.png", resolver=FakeResolver(default=["127.0.0.1"]))


# --- which addresses are public ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # "this network" 0.0.0.0/8
        "0.1.2.3",
        "10.1.2.3",  # private 10/8
        "100.64.0.1",  # carrier-grade NAT 100.64/10
        "100.127.255.254",
        "127.0.0.1",  # loopback
        "127.255.255.255",
        "169.254.169.254",  # link-local, the instance metadata service
        "172.16.0.1",  # private 172.16/12
        "172.31.255.255",
        "192.0.0.1",  # IETF protocol assignments 192.0.0/24
        "192.0.0.9",  # ... also its anycast addresses, which is_global admits
        "192.0.0.10",
        "192.0.0.170",
        "192.0.2.1",  # documentation TEST-NET-1
        "192.88.99.1",  # 6to4 relay anycast
        "192.168.1.1",  # private 192.168/16
        "198.18.0.1",  # benchmarking 198.18/15
        "198.51.100.1",  # TEST-NET-2
        "203.0.113.1",  # TEST-NET-3
        "224.0.0.1",  # multicast, which is_global admits
        "239.255.255.250",
        "240.0.0.1",  # reserved 240/4
        "255.255.255.255",  # broadcast
        "::",  # unspecified
        "::1",  # loopback
        "::ffff:127.0.0.1",  # IPv4-mapped: the embedded IPv4 decides
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:100.64.0.1",
        "::ffff:224.0.0.1",
        "::127.0.0.1",  # IPv4-compatible (deprecated), which is_global admits
        "::10.0.0.1",
        "::169.254.169.254",
        "64:ff9b::808:808",  # NAT64 well-known prefix, even around a public IPv4
        "64:ff9b::a00:1",  # ... and around a private one, which is_global admits
        "64:ff9b::a9fe:a9fe",  # 169.254.169.254 through NAT64
        "64:ff9b:1::1",  # NAT64 local-use prefix
        "64:ff9b:1::808:808",
        "2002::1",  # 6to4
        "2002:808:808::1",
        "2002:a00:1::1",
        "2001::1",  # Teredo
        "2001:0:808:808::1",
        "2001:db8::1",  # documentation
        "3fff::1",  # documentation (RFC 9637), which is_global (3.13) admits
        "100::1",  # discard-only
        "fc00::1",  # unique local
        "fd00:ec2::254",  # the IPv6 metadata endpoint
        "fe80::1",  # link-local
        "fe80::1%eth0",
        "fec0::1",  # site-local (deprecated), which is_global admits
        "ff02::1",  # multicast
        "ff0e::1",  # global-scope multicast, which is_global admits
        "::1:2:3",  # reserved ::/8
        "1::1",
        "4000::1",  # reserved, which is_global admits
        "5f00::1",  # SRv6 SIDs
        "e000::1",
    ],
)
def test_given_special_purpose_address_when_judged_then_it_is_not_public(address):
    assert not is_public_address(ipaddress.ip_address(address.split("%")[0]))
    refused("https://cdn.apiframe.pro/1.png", resolver=FakeResolver(default=[address]))


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC_V4,
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below carrier-grade NAT
        "100.128.0.1",  # just above it
        "172.32.0.1",  # just above 172.16/12
        "192.0.1.1",  # just above 192.0.0/24
        "223.255.255.254",  # just below multicast
        PUBLIC_V6,
        "2a00:1450:4001:830::200e",
        "2600:1f18::1",  # AWS
        "::ffff:8.8.8.8",  # IPv4-mapped around a public IPv4
    ],
)
def test_given_public_unicast_address_when_judged_then_it_is_public(address):
    assert is_public_address(ipaddress.ip_address(address))
    assert check_image_url("https://cdn.apiframe.pro/1.png", DEFAULT_ORIGINS, FakeResolver(default=[address]))
