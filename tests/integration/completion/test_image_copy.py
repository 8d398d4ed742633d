"""Copying result images: a job is COMPLETED only when every image is in S3; a broken image host is
retried (by the reconciler) and, after too many failures or a permanent one, the job FAILS with
COPY_FAILED. The copier itself refuses URLs outside the allowlist or pointing inside the network, and
streams large images into S3 (multipart) byte for byte.

Test stack limits (conftest): images up to 2 MiB, 3 s image timeout, 3 copy failures before FAILED.
"""

from __future__ import annotations

import socket
from typing import Any

import boto3
import pytest
import requests
from vary_region.completion.image_copier import ImageCopier
from vary_region.core.errors import ImageCopyError, UnsafeImageUrl
from vary_region.settings import ImageOrigin

from tests.support.builders import create_simulator_task, new_job_id, post_webhook, upload_job
from tests.support.faults import start_job_in_flight
from tests.support.waits import (
    final_body,
    get_job,
    keys_under,
    read_error_json,
    read_json,
    run_reconciler_until,
    wait_for_object,
    wait_for_status,
    wait_until,
)

RESULT_KEYS = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]
COPY_FAILURES_BEFORE_FAILED = 3


def is_final(item: dict[str, Any]) -> bool:
    return item.get("status") in ("COMPLETED", "FAILED", "REJECTED")


def result_json_exists(s3: Any, bucket: str, job_id: str) -> bool:
    return f"results/{job_id}/result.json" in keys_under(s3, bucket, f"results/{job_id}/")


# ---- the image host misbehaves during the final copy --------------------------------------------------
# image_status=500 is covered end to end (the simulator's own final webhook) further down.
RETRYABLE_HOST_FAULTS = [
    pytest.param({"image_truncate": True}, id="body-truncated"),
    pytest.param({"image_delay": 5.0}, id="host-slower-than-timeout", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("host_fault", RETRYABLE_HOST_FAULTS)
def test_given_image_host_fails_during_final_copy_then_job_not_completed_and_reconciler_recovers(
    stack, sim, s3, table, bucket, host_fault
):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="copy-retry")
    final = final_body(sim, job.task_id)
    sim.set_faults(**host_fault)

    response = post_webhook(stack, job.job_id, final, secret=job.secret)

    assert response.status_code == 200, response.text  # handed to the completion worker
    assert response.json()["outcome"] == "queued"
    item = wait_until(
        lambda: (i := get_job(table, job.job_id)) and int(i.get("copy_failures", 0)) >= 1 and i,
        timeout=30,
        message="the worker's first copy failure",
    )
    sim.reset()  # the host recovers, before the worker's own retry a second later
    assert item["status"] not in ("COMPLETED", "FAILED"), item
    assert int(item["copy_failures"]) == 1
    assert item.get("last_copy_error")
    assert not result_json_exists(s3, bucket, job.job_id), "a partial copy must never look finished"

    item = run_reconciler_until(stack, table, job.job_id, is_final)

    assert item["status"] == "COMPLETED", item.get("error")
    assert keys_under(s3, bucket, f"results/{job.job_id}/") == [f"results/{job.job_id}/{n}" for n in RESULT_KEYS]
    result = read_json(s3, bucket, f"results/{job.job_id}/result.json")
    for name, image in result["images"].items():
        stored = s3.get_object(Bucket=bucket, Key=image["key"])["Body"].read()
        assert len(stored) == image["bytes"]
        assert stored == requests.get(image["source_url"], timeout=10).content, f"{name} is not the full image"


def test_given_image_host_answers_500_during_final_copy_then_job_not_completed_and_reconciler_recovers(
    stack, sim, s3, table, bucket
):
    """End to end: the simulator's own final webhook meets a failing image host."""
    sim.set_faults(image_status=500)
    job_id = new_job_id("copy-sim")
    upload_job(s3, bucket, job_id)
    item = wait_until(
        lambda: (i := get_job(table, job_id)) and int(i.get("copy_failures", 0)) >= 1 and i,
        message="the first copy failure",
    )
    assert item["status"] == "PROCESSING"
    assert "500" in item["last_copy_error"]
    assert not result_json_exists(s3, bucket, job_id), "a partial copy must never look finished"
    assert sim.wait_idle(timeout=20)
    sim.reset()

    item = run_reconciler_until(stack, table, job_id, is_final)

    assert item["status"] == "COMPLETED", item.get("error")
    assert int(item["copy_failures"]) == 1
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/{n}" for n in RESULT_KEYS]


def test_given_image_larger_than_limit_then_job_fails_at_once_with_copy_failed(stack, sim, s3, table, bucket):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="copy-big")
    final = final_body(sim, job.task_id)
    sim.set_faults(image_padding_bytes=3 * 1024 * 1024)  # > the stack's 2 MiB limit

    response = post_webhook(stack, job.job_id, final, secret=job.secret)

    assert response.status_code == 200, response.text
    item = wait_for_status(table, job.job_id)
    assert item["status"] == "FAILED"
    assert item["error"]["code"] == "COPY_FAILED" and item["error"]["stage"] == "copy"
    assert "larger than" in item["error"]["message"]
    assert int(item["copy_failures"]) == 1, "a permanent failure is not retried"
    wait_for_object(s3, bucket, f"results/{job.job_id}/error.json")  # written right after the state
    assert not result_json_exists(s3, bucket, job.job_id)
    error = read_error_json(s3, bucket, job.job_id)
    assert error["status"] == "FAILED" and error["error"]["code"] == "COPY_FAILED"
    # It stays failed, even once the host behaves again.
    sim.reset()
    assert post_webhook(stack, job.job_id, final, secret=job.secret).status_code == 200
    assert get_job(table, job.job_id) == item


def test_given_image_host_keeps_failing_then_job_fails_after_three_attempts(stack, sim, s3, table, bucket, provider):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="copy-3x")
    final = final_body(sim, job.task_id)
    sim.set_faults(image_status=500)

    # One final report: the completion worker tries, queues itself a later try, and so on.
    assert post_webhook(stack, job.job_id, final, secret=job.secret).status_code == 200

    item = wait_for_status(table, job.job_id, timeout=60)
    assert item["status"] == "FAILED"
    assert int(item["copy_failures"]) == COPY_FAILURES_BEFORE_FAILED
    assert item["error"]["code"] == "COPY_FAILED" and item["error"]["stage"] == "copy"
    assert "500" in item["error"]["message"]
    wait_for_object(s3, bucket, f"results/{job.job_id}/error.json")
    assert not result_json_exists(s3, bucket, job.job_id)
    assert read_error_json(s3, bucket, job.job_id)["error"]["code"] == "COPY_FAILED"
    assert "active" not in item, "a failed job leaves the reconciler's index"
    # Each of the three tries downloads all five images with three attempts each: bounded, not endless.
    assert provider.image_gets(job.task_id) == COPY_FAILURES_BEFORE_FAILED * 5 * 3


# ---- the copier on its own: URL refusal and streaming -----------------------------------------------
class NoNetwork(requests.Session):
    """A session that fails the test if the copier tries to download anything."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the copier must not fetch a refused URL: {args}")


def fixed_resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


CDN = ImageOrigin.parse("cdn.apiframe.pro")  # as in the deployed settings
PUBLIC = "93.184.216.34"


@pytest.mark.generation_blind  # the copier alone, against the image host
@pytest.mark.parametrize(
    ("url", "allowlist", "addresses"),
    [
        pytest.param("http://cdn.apiframe.pro/a.png", [CDN], [PUBLIC], id="plain-http"),
        pytest.param("https://evil.example.com/a.png", [CDN], [PUBLIC], id="unlisted-host"),
        pytest.param("https://cdn.apiframe.pro.evil.example.com/a.png", [CDN], [PUBLIC], id="listed-host-as-prefix"),
        pytest.param("https://cdn.apiframe.pro:8443/a.png", [CDN], [PUBLIC], id="listed-host-other-port"),
        pytest.param("https://user:pw@cdn.apiframe.pro/a.png", [CDN], [PUBLIC], id="credentials-in-url"),
        pytest.param("ftp://cdn.apiframe.pro/a.png", [CDN], [PUBLIC], id="other-scheme"),
        pytest.param("https:///a.png", [CDN], [PUBLIC], id="no-host"),
        pytest.param("https://169.254.169.254/latest/meta-data/", [CDN], [PUBLIC], id="ip-literal-unlisted"),
        pytest.param("https://10.0.0.1/a.png", [ImageOrigin.parse("10.0.0.1")], [PUBLIC], id="ip-literal-listed"),
        pytest.param("https://[fd00::1]/a.png", [ImageOrigin("https", "fd00::1")], [PUBLIC], id="ipv6-literal-listed"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], ["169.254.169.254"], id="resolves-to-metadata"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], ["10.0.0.1"], id="resolves-to-private"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], ["127.0.0.1"], id="resolves-to-loopback"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], ["::1"], id="resolves-to-ipv6-loopback"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], ["::ffff:169.254.169.254"], id="resolves-to-mapped"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], ["100.64.0.1"], id="resolves-to-shared-space"),
        pytest.param("https://cdn.apiframe.pro/a.png", [CDN], [PUBLIC, "10.0.0.1"], id="one-of-many-private"),
    ],
)
def test_given_unsafe_image_url_when_copier_runs_then_refused_and_nothing_written(
    stack, s3, bucket, url, allowlist, addresses
):
    prefix = f"results/{new_job_id('refused')}/"
    copier = ImageCopier(
        boto3.client("s3"),
        bucket,
        allowlist,
        max_bytes=64 * 1024 * 1024,
        session=NoNetwork(),
        resolver=fixed_resolver(*addresses),
        sleep=lambda _: None,
    )

    with pytest.raises(UnsafeImageUrl) as refused:
        copier.copy_all({"grid": url}, lambda name: f"{prefix}{name}.png")

    assert refused.value.permanent
    assert keys_under(s3, bucket, prefix) == []


@pytest.mark.generation_blind  # the copier alone, against the image host
def test_given_unresolvable_listed_host_then_refused(stack, s3, bucket):
    def no_dns(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    prefix = f"results/{new_job_id('nodns')}/"
    copier = ImageCopier(boto3.client("s3"), bucket, [CDN], max_bytes=1024, session=NoNetwork(), resolver=no_dns)

    with pytest.raises(UnsafeImageUrl):
        copier.copy_all({"grid": "https://cdn.apiframe.pro/a.png"}, lambda name: f"{prefix}{name}.png")
    assert keys_under(s3, bucket, prefix) == []


def dns_trying_again(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


@pytest.mark.generation_blind  # the copier alone, against the image host
def test_given_listed_host_not_looked_up_just_now_then_the_copy_fails_to_be_retried(stack, s3, bucket):
    prefix = f"results/{new_job_id('dns-again')}/"
    copier = ImageCopier(
        boto3.client("s3"), bucket, [CDN], max_bytes=1024, session=NoNetwork(), resolver=dns_trying_again
    )

    with pytest.raises(ImageCopyError) as failed:
        copier.copy_all({"grid": "https://cdn.apiframe.pro/a.png"}, lambda name: f"{prefix}{name}.png")

    assert not failed.value.permanent, "retried later, as an unreachable image host is"
    assert keys_under(s3, bucket, prefix) == []


def test_given_an_optional_image_whose_host_is_not_looked_up_just_now_then_the_rest_is_copied_without_it(
    stack, sim, s3, bucket
):
    task = create_simulator_task(sim, stack.options.api_key)
    prefix = f"results/{new_job_id('dns-optional')}/"

    def lookups(host: str, port: int) -> list[str]:
        assert host == "cdn.apiframe.pro", "only the optional image's host is looked up"
        return dns_trying_again(host, port)

    copier = ImageCopier(
        boto3.client("s3"), bucket, [ImageOrigin.parse(sim.base_url), CDN], max_bytes=4 * 1024 * 1024, resolver=lookups
    )

    try:
        copied = copier.copy_all(
            {"grid": task["result"]["original_image_url"]},
            lambda name: f"{prefix}{name}.png",
            optional={"parent": "https://cdn.apiframe.pro/parent.png"},
        )
    except ImageCopyError as exc:
        raise AssertionError(f"an optional image failed the whole copy: {exc}") from None

    assert [image.name for image in copied] == ["grid"]
    assert keys_under(s3, bucket, prefix) == [f"{prefix}grid.png"]


def test_given_one_unsafe_url_among_good_ones_then_no_image_is_fetched(stack, sim, s3, bucket, provider):
    task = create_simulator_task(sim, stack.options.api_key)
    good = {"grid": task["result"]["original_image_url"]} | {
        str(i): u for i, u in enumerate(task["result"]["image_urls"], start=1)
    }
    prefix = f"results/{new_job_id('mixed')}/"
    copier = ImageCopier(boto3.client("s3"), bucket, [ImageOrigin.parse(sim.base_url)], max_bytes=64 * 1024 * 1024)

    with pytest.raises(UnsafeImageUrl):
        copier.copy_all(good | {"4": "http://169.254.169.254/latest/meta-data/"}, lambda n: f"{prefix}{n}.png")

    assert keys_under(s3, bucket, prefix) == []
    assert provider.image_gets(task["task_id"]) == 0


def test_given_large_image_when_copied_then_streamed_into_s3_by_multipart_byte_identical(stack, sim, s3, bucket):
    task = create_simulator_task(sim, stack.options.api_key)
    url = task["result"]["image_urls"][0]
    sim.set_faults(image_padding_bytes=12 * 1024 * 1024)
    expected = requests.get(url, timeout=30).content
    assert len(expected) > 12 * 1024 * 1024
    prefix = f"results/{new_job_id('stream')}/"
    copier = ImageCopier(boto3.client("s3"), bucket, [ImageOrigin.parse(sim.base_url)], max_bytes=64 * 1024 * 1024)

    copied = copier.copy_all({"1": url}, lambda name: f"{prefix}{name}.png")

    assert [(c.name, c.key, c.size, c.content_type) for c in copied] == [
        ("1", f"{prefix}1.png", len(expected), "image/png")
    ]
    stored = s3.get_object(Bucket=bucket, Key=f"{prefix}1.png")
    assert stored["ContentLength"] == len(expected)
    assert stored["ETag"].strip('"').count("-") == 1, "a large image goes up in parts (multipart ETag)"
    assert stored["Body"].read() == expected


def test_given_image_above_max_bytes_without_content_length_then_copy_stops_at_the_limit(stack, sim, s3, bucket):
    """The size limit holds on the bytes actually read, not only on the declared Content-Length."""
    task = create_simulator_task(sim, stack.options.api_key)
    url = task["result"]["image_urls"][0]
    sim.set_faults(image_padding_bytes=3 * 1024 * 1024)

    class HideLength(requests.Session):
        def get(self, *args: Any, **kwargs: Any) -> Any:
            response = super().get(*args, **kwargs)
            response.headers.pop("Content-Length", None)  # as a chunked response comes: no declared size
            response.headers["Transfer-Encoding"] = "chunked"
            return response

    prefix = f"results/{new_job_id('nolength')}/"
    copier = ImageCopier(
        boto3.client("s3"),
        bucket,
        [ImageOrigin.parse(sim.base_url)],
        max_bytes=1024 * 1024,
        session=HideLength(),
        sleep=lambda _: None,
    )

    with pytest.raises(ImageCopyError) as failed:
        copier.copy_all({"1": url}, lambda name: f"{prefix}{name}.png")

    assert failed.value.permanent
    assert "larger than" in str(failed.value)
    assert keys_under(s3, bucket, prefix) == []
