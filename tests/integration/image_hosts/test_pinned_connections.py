"""The copier connects to the address its URL check approved, and only to it (no DNS rebinding window).

Real sockets: a local image host on 127.0.0.1, named `cdn.example.invalid` through a resolver stub.
The system resolver cannot resolve `.invalid`, so a download that looked the name up again when
connecting would fail; the loopback answer is admitted through the copier's injectable address
rule, so the same setup also shows that the default rule refuses it before any byte is sent.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import requests
from vary_region.completion.image_copier import ImageCopier
from vary_region.core.errors import ImageCopyError, UnsafeImageUrl
from vary_region.image_hosts.url_policy import IPAddress, is_public_address
from vary_region.settings import ImageOrigin

from tests.support.builders import new_job_id
from tests.support.waits import keys_under, not_raising
from tests.unit.image_hosts.test_pinned_http import NAME, LocalHost, local_hosts, self_signed, server_context

pytestmark = pytest.mark.generation_blind

NAMES = ("grid", "1", "2", "3", "4")


class StubResolver:
    """DNS for the test: answers from a script, one answer per lookup, and counts lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.asked.append(host)
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture()
def serve() -> Iterator[Callable[..., LocalHost]]:
    with local_hosts() as start:
        yield start


def loopback_admitted(ip: IPAddress) -> bool:
    return ip.is_loopback or is_public_address(ip)


@pytest.fixture()
def system_lookups(monkeypatch: Any) -> list[str]:
    """Every host name handed to the system resolver while the test runs."""
    seen: list[str] = []
    original = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        return original(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return seen


def http_origin(port: int) -> ImageOrigin:
    # Plain http for a non-loopback name is not something settings accept; the test builds the
    # origin directly so that the host need not speak TLS (the TLS case is below).
    return ImageOrigin("http", NAME, port)


def images(host: Any) -> dict[str, str]:
    for name in NAMES:
        host.bodies[f"/{name}.png"] = f"picture {name} ".encode() * 4096
    return {name: f"http://{NAME}:{host.port}/{name}.png" for name in NAMES}


def test_given_name_resolved_once_when_copied_then_each_download_goes_to_that_address_with_the_name_as_host(
    stack, bucket, serve, system_lookups
):
    host = serve()
    sources = images(host)
    resolver = StubResolver(["127.0.0.1"])
    s3 = boto3.client("s3")
    prefix = f"results/{new_job_id('pinned')}/"
    copier = ImageCopier(
        s3,
        bucket,
        [http_origin(host.port)],
        max_bytes=1024 * 1024,
        resolver=resolver,
        address_allowed=loopback_admitted,
    )

    copied = copier.copy_all(sources, lambda name: f"{prefix}{name}.png")

    assert sorted(c.name for c in copied) == sorted(NAMES)
    for image in copied:
        stored = s3.get_object(Bucket=bucket, Key=image.key)["Body"].read()
        assert stored == host.bodies[f"/{image.name}.png"]
    assert host.hosts() == [f"{NAME}:{host.port}"] * len(NAMES)
    assert resolver.asked == [NAME] * len(NAMES), "one lookup per image, by the check"
    assert NAME not in system_lookups, "nothing resolved the name again to connect"


def test_given_answer_that_changes_after_the_check_when_a_download_is_retried_then_it_stays_on_the_checked_address(
    stack, bucket, serve, system_lookups
):
    # Rebinding: the first answer passes the check; any later lookup would say "metadata service".
    host = serve()
    host.bodies["/1.png"] = b"the real picture"
    host.statuses = [503]  # the first attempt fails, the retry must not look the name up again
    resolver = StubResolver(["127.0.0.1"], ["169.254.169.254"])
    s3 = boto3.client("s3")
    prefix = f"results/{new_job_id('rebind')}/"
    copier = ImageCopier(
        s3,
        bucket,
        [http_origin(host.port)],
        max_bytes=1024 * 1024,
        resolver=resolver,
        address_allowed=loopback_admitted,
        sleep=lambda _: None,
    )

    [copied] = copier.copy_all({"1": f"http://{NAME}:{host.port}/1.png"}, lambda name: f"{prefix}{name}.png")

    assert s3.get_object(Bucket=bucket, Key=copied.key)["Body"].read() == b"the real picture"
    assert len(host.requests) == 2
    assert resolver.asked == [NAME]
    assert NAME not in system_lookups


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(["127.0.0.1"], id="loopback"),
        pytest.param(["93.184.216.34", "127.0.0.1"], id="public-and-loopback"),
        pytest.param(["::ffff:127.0.0.1"], id="mapped-loopback"),
    ],
)
def test_given_name_resolving_to_a_non_public_address_when_copied_with_the_default_rule_then_nothing_is_sent(
    stack, bucket, serve, answer
):
    host = serve()
    sources = images(host)
    s3 = boto3.client("s3")
    prefix = f"results/{new_job_id('private')}/"
    copier = ImageCopier(s3, bucket, [http_origin(host.port)], max_bytes=1024 * 1024, resolver=StubResolver(answer))

    with pytest.raises(UnsafeImageUrl):
        copier.copy_all(sources, lambda name: f"{prefix}{name}.png")

    assert host.requests == [], "refused before any request reached the host"
    assert keys_under(s3, bucket, prefix) == []


def test_given_tls_host_when_copied_then_sni_and_the_certificate_check_use_the_original_name(
    stack, bucket, serve, tmp_path, system_lookups
):
    cert, key = self_signed(tmp_path, NAME)  # valid for the name only, not for 127.0.0.1
    host = serve(server_context(cert, key))
    host.bodies["/grid.png"] = b"grid over tls" * 1000
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test's own trusted certificate
    session.verify = str(cert)
    s3 = boto3.client("s3")
    prefix = f"results/{new_job_id('tls')}/"
    copier = ImageCopier(
        s3,
        bucket,
        [ImageOrigin.parse(f"https://{NAME}:{host.port}")],
        max_bytes=1024 * 1024,
        session=session,
        resolver=StubResolver(["127.0.0.1"]),
        address_allowed=loopback_admitted,
    )

    with not_raising(ImageCopyError):
        [copied] = copier.copy_all({"grid": f"https://{NAME}:{host.port}/grid.png"}, lambda n: f"{prefix}{n}.png")

    assert s3.get_object(Bucket=bucket, Key=copied.key)["Body"].read() == host.bodies["/grid.png"]
    assert host.server_names == [NAME]
    assert host.hosts() == [f"{NAME}:{host.port}"]
    assert NAME not in system_lookups


def test_given_tls_host_whose_certificate_names_another_host_when_copied_then_refused_and_nothing_stored(
    stack, bucket, serve, tmp_path
):
    cert, key = self_signed(tmp_path, "other.example.invalid")
    host = serve(server_context(cert, key))
    session = requests.Session()
    session.trust_env = False
    session.verify = str(cert)
    s3 = boto3.client("s3")
    prefix = f"results/{new_job_id('tls-wrong')}/"
    copier = ImageCopier(
        s3,
        bucket,
        [ImageOrigin.parse(f"https://{NAME}:{host.port}")],
        max_bytes=1024 * 1024,
        attempts=1,
        session=session,
        resolver=StubResolver(["127.0.0.1"]),
        address_allowed=loopback_admitted,
    )

    with pytest.raises(ImageCopyError, match="SSLError"):
        copier.copy_all({"grid": f"https://{NAME}:{host.port}/grid.png"}, lambda n: f"{prefix}{n}.png")

    assert host.requests == []
    assert keys_under(s3, bucket, prefix) == []
