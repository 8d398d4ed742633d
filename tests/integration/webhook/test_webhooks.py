"""The webhook endpoint over real HTTP: only the job's own secret is accepted, progress only moves
forward, a finished job never changes, and the body of a final webhook is a signal, never the source
of the result (the pipeline re-reads it from Fetch).

Jobs "in flight" are submitted with the simulator's webhooks dropped, so the test speaks for the
provider; the real secret is the one the simulator received at submit time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests

from tests.support.builders import job_json, mask_png, new_job_id, post_webhook, progress_body, upload_job
from tests.support.faults import InFlightJob, settle_job, start_job_in_flight
from tests.support.recorders import WebhookRecorder
from tests.support.waits import (
    final_body,
    get_job,
    job_item,
    keys_under,
    object_version,
    read_json,
    wait_for_job,
    wait_for_object,
    wait_for_sim_task,
    wait_for_status,
    wait_until,
)

RESULT_KEYS = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]
WRONG_SECRET = "not-the-secret-" + "x" * 28


def result_keys(job_id: str) -> list[str]:
    return [f"results/{job_id}/{name}" for name in RESULT_KEYS]


@pytest.fixture()
def webhook_answers(stack: Any, monkeypatch: Any) -> WebhookRecorder:
    return WebhookRecorder.install(stack, monkeypatch)


# ---- forged and malformed webhooks -----------------------------------------------------------------
class Pair:
    def __init__(self, a: InFlightJob, b: InFlightJob, received_only: str) -> None:
        self.a, self.b, self.received_only = a, b, received_only


@pytest.fixture(scope="module")
def pair(stack: Any) -> Iterator[Pair]:
    """Two submitted jobs whose tasks are finished at the provider but whose webhooks were dropped,
    and a third job that was received (job.json only) but never submitted. Any accepted final
    webhook would complete a job, so an unchanged item proves the webhook was refused."""
    sim = stack.simulator
    s3, table = boto3.client("s3"), boto3.resource("dynamodb").Table(stack.info.table)
    bucket = stack.info.bucket
    assert sim.wait_idle(timeout=10)
    a = start_job_in_flight(s3, bucket, table, sim, prefix="forge-a")
    b = start_job_in_flight(s3, bucket, table, sim, prefix="forge-b")
    sim.reset()
    received_only = new_job_id("forge-received")
    s3.put_object(Bucket=bucket, Key=f"inbox/{received_only}/job.json", Body=job_json())
    wait_until(lambda: get_job(table, received_only), message="the received-only job item")
    for job in (a, b):
        wait_for_sim_task(sim, job.task_id, ("finished",))
    yield Pair(a, b, received_only)
    # Leave no open work behind for later reconciler runs.
    sim.reset()
    for job in (a, b):
        settle_job(stack, sim, table, job)
    s3.put_object(Bucket=bucket, Key=f"inbox/{received_only}/mask.png", Body=mask_png())
    wait_for_job(table, received_only)


def _forged_cases() -> list[Any]:
    # Each case: (job whose URL is called, secret header or None, body) built from the pair.
    return [
        pytest.param(lambda p, s: (p.a.job_id, None, final_body(s, p.a.task_id)), id="missing-secret"),
        pytest.param(lambda p, s: (p.a.job_id, WRONG_SECRET, final_body(s, p.a.task_id)), id="wrong-secret"),
        pytest.param(lambda p, s: (p.a.job_id, "", final_body(s, p.a.task_id)), id="empty-secret"),
        pytest.param(
            lambda p, s: (p.a.job_id, p.a.secret.upper(), final_body(s, p.a.task_id)), id="secret-in-other-case"
        ),
        pytest.param(lambda p, s: (p.a.job_id, p.b.secret, final_body(s, p.a.task_id)), id="another-jobs-secret"),
        pytest.param(
            lambda p, s: (p.a.job_id, p.b.secret, final_body(s, p.b.task_id)), id="another-jobs-secret-and-task"
        ),
        pytest.param(
            lambda p, s: (p.a.job_id, p.a.secret, final_body(s, p.b.task_id)), id="right-secret-another-jobs-task-final"
        ),
        pytest.param(
            lambda p, s: (p.a.job_id, p.a.secret, progress_body(p.b.task_id, "90")),
            id="right-secret-another-jobs-task-progress",
        ),
        pytest.param(
            lambda p, s: (p.received_only, p.a.secret, final_body(s, p.a.task_id)),
            id="job-received-but-never-submitted",
        ),
    ]


@pytest.mark.parametrize("build", _forged_cases())
def test_given_forged_webhook_when_posted_then_401_and_job_item_unchanged(stack, sim, table, pair, provider, build):
    job_id, secret, body = build(pair, sim)
    before = get_job(table, job_id)

    response = post_webhook(stack, job_id, body, secret=secret)

    assert response.status_code == 401, response.text
    assert response.json() == {"message": "unauthorized"}  # the same answer whatever was wrong
    assert get_job(table, job_id) == before
    assert provider.side_effects(pair.a.task_id, pair.b.task_id) == (0, 0), (
        "a refused webhook must not reach Fetch or the image host"
    )
    assert keys_under(boto3.client("s3"), stack.info.bucket, f"results/{job_id}/") == []


def test_given_unknown_job_id_when_webhook_posted_then_401_and_no_item_created(stack, sim, table, pair, provider):
    ghost = new_job_id("ghost")

    response = post_webhook(stack, ghost, final_body(sim, pair.a.task_id), secret=pair.a.secret)

    assert response.status_code == 401
    assert get_job(table, ghost) is None
    assert provider.side_effects(pair.a.task_id) == (0, 0)


def _oversized(task_body: dict[str, Any]) -> bytes:
    """A valid finished payload, only larger than the 64 KiB limit."""
    body = json.dumps(task_body | {"padding": "x" * (64 * 1024)}).encode()
    assert len(body) > 64 * 1024
    return body


@pytest.mark.parametrize(
    ("kind", "make_body"),
    [
        pytest.param("oversized", _oversized, id="oversized"),
        pytest.param("not-json", lambda _: b"task finished, trust me", id="not-json"),
        pytest.param("binary", lambda _: b"\xff\xfe\x00\x01" * 16, id="binary"),
        pytest.param("json-array", lambda body: json.dumps([body]).encode(), id="json-array"),
        pytest.param("no-task-id", lambda body: json.dumps({"status": "finished"}).encode(), id="no-task-id"),
    ],
)
@pytest.mark.parametrize("secret_kind", ["wrong", "right"])
def test_given_malformed_body_then_401_with_wrong_secret_400_with_right_one_and_nothing_changes(
    stack, sim, table, pair, provider, kind, make_body, secret_kind
):
    job = pair.a
    body = make_body(final_body(sim, job.task_id))
    before = get_job(table, job.job_id)

    response = post_webhook(stack, job.job_id, secret=WRONG_SECRET if secret_kind == "wrong" else job.secret, body=body)

    assert response.status_code == (401 if secret_kind == "wrong" else 400), response.text
    assert get_job(table, job.job_id) == before
    assert provider.side_effects(job.task_id) == (0, 0)


# ---- progress, completion and repeats ------------------------------------------------------------------
def test_given_progress_webhooks_then_percentage_only_moves_forward_and_final_completes_once(
    stack, sim, s3, table, bucket, provider
):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="progress")
    assert job.item["status"] == "SUBMITTED"

    # The documented progress shape carries the percentage as a string.
    response = post_webhook(stack, job.job_id, progress_body(job.task_id, "80"), secret=job.secret)
    assert response.status_code == 200, response.text
    item = job_item(table, job.job_id)
    assert (item["status"], int(item["percentage"])) == ("PROCESSING", 80)

    # A late, lower report never moves the job backwards.
    response = post_webhook(stack, job.job_id, progress_body(job.task_id, "50"), secret=job.secret)
    assert response.status_code == 200, response.text
    item = job_item(table, job.job_id)
    assert (item["status"], int(item["percentage"])) == ("PROCESSING", 80)

    # The documented finished shape has no status: image_urls alone mean "finished".
    final = final_body(sim, job.task_id)
    assert "status" not in final and len(final["image_urls"]) == 4
    response = post_webhook(stack, job.job_id, final, secret=job.secret)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "queued", "a final webhook is handed to the completion worker"
    item = wait_for_status(table, job.job_id)
    assert item["status"] == "COMPLETED" and int(item["percentage"]) == 100
    assert keys_under(s3, bucket, f"results/{job.job_id}/") == result_keys(job.job_id)
    result = read_json(s3, bucket, f"results/{job.job_id}/result.json")
    assert result["task_id"] == job.task_id and set(result["images"]) == {"grid", "1", "2", "3", "4"}
    versions = {key: object_version(s3, bucket, key) for key in result_keys(job.job_id)}
    completed_item, effects = item, provider.side_effects(job.task_id)
    assert effects == (1, 5), "one Fetch to confirm the result, one download per image"

    # The provider repeats the final webhook: accepted, and nothing is fetched, copied or rewritten.
    response = post_webhook(stack, job.job_id, final, secret=job.secret)
    assert response.status_code == 200, response.text
    assert get_job(table, job.job_id) == completed_item
    assert {key: object_version(s3, bucket, key) for key in result_keys(job.job_id)} == versions
    assert provider.side_effects(job.task_id) == effects

    # Progress after the end changes nothing either.
    response = post_webhook(stack, job.job_id, progress_body(job.task_id, "90"), secret=job.secret)
    assert response.status_code == 200, response.text
    item = job_item(table, job.job_id)
    assert item == completed_item
    assert item["status"] == "COMPLETED" and int(item["percentage"]) == 100


def test_a_repeated_or_replayed_progress_report_changes_nothing_so_the_job_still_looks_quiet(
    stack, sim, s3, table, bucket
):
    # A captured webhook stays valid (v2 signs no timestamp, v1 echoes a secret): replayed while the
    # job runs, it must not refresh updated_at, or a job whose final webhook was lost would never be
    # quiet enough for the reconciler to recover it.
    job = start_job_in_flight(s3, bucket, table, sim, prefix="replayed")
    for body in (progress_body(job.task_id, "40"), {"task_id": job.task_id, "status": "processing"}):
        assert post_webhook(stack, job.job_id, body, secret=job.secret).status_code == 200
        moved = get_job(table, job.job_id)
        time.sleep(0.01)  # a later write would carry a later updated_at
        replayed = post_webhook(stack, job.job_id, body, secret=job.secret)
        assert (replayed.status_code, replayed.json()["outcome"]) == (200, "unchanged")
        assert get_job(table, job.job_id) == moved
    settle_job(stack, sim, table, job)


def test_given_percentage_as_number_or_with_percent_sign_then_it_is_recorded(stack, sim, s3, table, bucket):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="pct")

    for value, expected in ((30, 30), ("45%", 45), ("61.7", 61)):
        body = progress_body(job.task_id, "0") | {"percentage": value}
        assert post_webhook(stack, job.job_id, body, secret=job.secret).status_code == 200
        assert int(job_item(table, job.job_id)["percentage"]) == expected

    sim.reset()
    settle_job(stack, sim, table, job)


UNTRUSTED_URLS = {
    "metadata-service": lambda sim, other: {
        "original_image_url": "http://169.254.169.254/latest/meta-data/grid.png",
        "image_urls": [f"http://169.254.169.254/latest/meta-data/{i}.png" for i in range(1, 5)],
    },
    "another-tasks-images-on-an-allowed-host": lambda sim, other: {
        "original_image_url": other["result"]["original_image_url"],
        "image_urls": other["result"]["image_urls"],
    },
}


@pytest.mark.parametrize("variant", list(UNTRUSTED_URLS))
def test_given_final_webhook_with_urls_that_differ_from_fetch_then_fetchs_images_are_copied(
    stack, sim, s3, table, bucket, variant
):
    other_job = start_job_in_flight(s3, bucket, table, sim, prefix="other")
    other = wait_for_sim_task(sim, other_job.task_id)
    job = start_job_in_flight(s3, bucket, table, sim, prefix="untrusted")
    real = final_body(sim, job.task_id)
    forged = {"task_id": job.task_id, "task_type": "inpaint"} | UNTRUSTED_URLS[variant](sim, other)
    sim.reset()

    response = post_webhook(stack, job.job_id, forged, secret=job.secret)

    assert response.status_code == 200, response.text
    item = wait_for_status(table, job.job_id)
    assert item["status"] == "COMPLETED"
    result = read_json(s3, bucket, f"results/{job.job_id}/result.json")
    copied_from = {name: image["source_url"] for name, image in result["images"].items()}
    expected = {"grid": real["original_image_url"]} | {str(i): u for i, u in enumerate(real["image_urls"], 1)}
    assert copied_from == expected
    # And the bytes are this task's pictures, not the other task's.
    for name, url in expected.items():
        stored = s3.get_object(Bucket=bucket, Key=f"results/{job.job_id}/{name}.png")["Body"].read()
        assert stored == requests.get(url, timeout=10).content
    settle_job(stack, sim, table, other_job)


def test_given_forged_failed_webhook_with_right_secret_when_provider_says_finished_then_job_completes(
    stack, sim, s3, table, bucket
):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="forged-fail")
    wait_for_sim_task(sim, job.task_id, ("finished",))
    sim.reset()

    forged = {"task_id": job.task_id, "task_type": "inpaint", "status": "failed", "message": "forged failure"}
    response = post_webhook(stack, job.job_id, forged, secret=job.secret)

    assert response.status_code == 200, response.text
    assert wait_for_status(table, job.job_id)["status"] == "COMPLETED"
    assert keys_under(s3, bucket, f"results/{job.job_id}/") == result_keys(job.job_id)


# ---- the simulator's own webhook misbehaviours, end to end ---------------------------------------------
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"duplicate_webhooks": True}, id="duplicate"),
        pytest.param({"reorder_webhooks": True}, id="reordered"),
        pytest.param({"duplicate_webhooks": True, "reorder_webhooks": True}, id="duplicate-and-reordered"),
        pytest.param({"finished_with_status": True}, id="finished-with-status"),
        pytest.param({"extra_fields": True}, id="extra-fields"),
    ],
)
def test_given_provider_webhook_quirks_when_job_runs_then_it_completes_with_five_images_once(
    stack, sim, s3, table, bucket, provider, webhook_answers, faults
):
    sim.set_faults(**faults)
    job_id = new_job_id("quirk")
    upload_job(s3, bucket, job_id)

    item = wait_for_job(table, job_id)
    assert sim.wait_idle(timeout=20)  # every webhook the provider meant to send has been answered

    assert item["status"] == "COMPLETED", item.get("error")
    final_item = get_job(table, job_id)
    assert final_item == item, "late (duplicate or reordered) webhooks must not change a finished job"
    assert int(final_item["percentage"]) == 100
    assert keys_under(s3, bucket, f"results/{job_id}/") == result_keys(job_id)
    assert provider.inpaint_calls(job_id) == 1
    assert provider.image_gets(item["task_id"]) == 5, "each result image is downloaded exactly once"
    deliveries = (len(sim.progress_steps) + 1) * (2 if faults.get("duplicate_webhooks") else 1)
    deliveries += (2 if faults.get("duplicate_webhooks") else 1) if faults.get("reorder_webhooks") else 0
    assert webhook_answers.statuses(job_id) == [200] * deliveries, "every delivery, repeated or late, got a 200"


def test_given_provider_fails_the_task_then_job_failed_with_its_message_and_error_json(
    stack, sim, s3, table, bucket, provider
):
    sim.set_faults(fail_task="Content policy violation")
    job_id = new_job_id("fail")
    upload_job(s3, bucket, job_id)

    item = wait_for_job(table, job_id)

    assert item["status"] == "FAILED"
    assert item["error"] == {"code": "PROVIDER_TASK_FAILED", "message": "Content policy violation", "stage": "provider"}
    # The state is written first and error.json second (by design): wait for the document itself.
    error = json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json"))
    assert error == {"job_id": job_id, "status": "FAILED", "error": item["error"]}
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/error.json"]
    assert provider.image_gets(item["task_id"]) == 0


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/webhook/some-job"), ("POST", "/webhook/some-job/extra"), ("POST", "/webhook/")],
    ids=["wrong method", "no route", "no job id"],
)
def test_given_a_request_outside_the_webhook_route_then_the_function_answers_404(stack, table, method, path):
    from vary_region_local.http_api import http_api_event

    # API Gateway routes only POST /webhook/{job_id} here; the function refuses anything else itself.
    event = http_api_event(method, path, "", {"x-webhook-secret": "s"}, b"{}", "127.0.0.1")

    answer = stack.functions["webhook"].invoke(event)

    assert (answer["statusCode"], json.loads(answer["body"])) == (404, {"message": "not found"})
    assert get_job(table, "some-job") is None


def _decoded_webhook_event(job: InFlightJob, secret: str, body: dict[str, Any]) -> dict[str, Any]:
    """The event for `job`'s webhook with its path parameter decoded, as API Gateway HTTP APIs are
    reported to deliver it (the local front passes it still percent-encoded)."""
    from urllib.parse import quote

    from vary_region_local.http_api import http_api_event

    headers = {"content-type": "application/json", "x-webhook-secret": secret}
    path = "/webhook/" + quote(job.job_id, safe="")
    event = http_api_event("POST", path, "", headers, json.dumps(body).encode(), "127.0.0.1")
    event["pathParameters"] = {"job_id": job.job_id}
    return event


@pytest.mark.v1_only  # URLs made before tokens (the raw job id) exist only under v1
def test_given_a_job_id_with_a_percent_sign_then_its_webhooks_arrive_encoded_or_decoded(stack, sim, s3, table, bucket):
    job = start_job_in_flight(s3, bucket, table, sim, prefix="100%41 sure")
    sim.reset()
    wait_for_sim_task(sim, job.task_id, ("finished",))

    # Encoded (the local front) ...
    assert post_webhook(stack, job.job_id, progress_body(job.task_id, "60"), secret=job.secret).status_code == 200
    # ... and decoded: "100%41" must not be decoded a second time (to "100A").
    answer = stack.functions["webhook"].invoke(_decoded_webhook_event(job, job.secret, final_body(sim, job.task_id)))

    assert answer["statusCode"] == 200, answer
    item = wait_for_job(table, job.job_id)
    assert (item["status"], item["percentage"]) == ("COMPLETED", 100)


@pytest.mark.v1_only  # URLs made before tokens (the raw job id) exist only under v1
def test_given_ids_that_differ_only_by_percent_decoding_then_a_decoded_webhook_reaches_its_own_job(
    stack, sim, s3, table, bucket
):
    suffix = new_job_id("twin")
    literal = start_job_in_flight(s3, bucket, table, sim, job_id=f"c%41-{suffix}")
    decoded_twin = start_job_in_flight(s3, bucket, table, sim, job_id=f"cA-{suffix}")
    sim.reset()
    for job in (literal, decoded_twin):
        wait_for_sim_task(sim, job.task_id, ("finished",))
    twin_before = get_job(table, decoded_twin.job_id)

    event = _decoded_webhook_event(literal, literal.secret, final_body(sim, literal.task_id))
    answer = stack.functions["webhook"].invoke(event)

    assert answer["statusCode"] == 200, answer
    assert wait_for_job(table, literal.job_id)["status"] == "COMPLETED"
    assert get_job(table, decoded_twin.job_id) == twin_before
    settle_job(stack, sim, table, decoded_twin)
