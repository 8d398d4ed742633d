"""Given APIFRAME misbehaves when the job is submitted, then: a 400 fails the job with the provider's
message and is never retried; 429 and 503 are retried with backoff inside the retry budget; a longer
outage makes AWS redeliver the event without ever double-submitting; a 500 (the API's handler may have
created the task before failing) is never resent and is flagged, like a submission whose answer was
lost (read timeout), which is still rescued by its late webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.job import parse_timestamp
from vary_region.core.stages import JobStage
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.submit.submitter import SubmitOutcome

from tests.support.builders import job_json, mask_png, new_job_id, put_files, s3_notification, sqs_event_for
from tests.support.faults import fail_error_json_write_once
from tests.support.waits import (
    job_item,
    keys_under,
    settle_stack,
    wait_for_job,
    wait_for_object,
    wait_for_queue_drained,
    wait_until,
)

RETRY_BUDGET_SECONDS = 3.0  # tests/conftest.py: submit_retry_budget_seconds
READ_TIMEOUT_SECONDS = 2.0  # tests/conftest.py: APIFRAME_READ_TIMEOUT_SECONDS


@pytest.fixture(autouse=True)
def _settled(stack, sim):
    """Counts of paid calls below belong to this test alone."""
    settle_stack(stack, sim)


def _upload(stack: Any, s3: Any, bucket: str, table: Any, job_id: str) -> list[str]:
    """Mask first, settled (the job waits, RECEIVED), then job.json: so exactly one S3 event, job.json's,
    can lead to a submission, and any further attempt is a redelivery of that one message."""
    keys = [f"inbox/{job_id}/mask.png", f"inbox/{job_id}/job.json"]
    put_files(s3, bucket, [(keys[0], mask_png(), "image/png")])
    wait_for_job(table, job_id, ("RECEIVED",))
    wait_for_queue_drained(stack)
    put_files(s3, bucket, [(keys[1], job_json(), "application/json")])
    return keys


def _items_when_held(stack: Any, table: Any, job_id: str, monkeypatch: Any) -> list[dict[str, Any]]:
    """The job's item right after each time the submit function held it back."""
    submitter = stack.functions["submit"].module.submitter
    real_handle, items = submitter.handle_upload, []

    def observed(key: str, time_left: Any = None) -> Any:
        result = real_handle(key, time_left)
        if result.job_id == job_id and result.outcome is SubmitOutcome.HELD:
            items.append(job_item(table, job_id))
        return result

    monkeypatch.setattr(submitter, "handle_upload", observed)
    return items


@contextmanager
def late_provider_webhooks(sim: Any, seconds: float) -> Iterator[None]:
    """Tasks created inside the block send no progress webhook and their final webhook only after
    `seconds`, so that it lands after the submit call has timed out."""
    saved = sim.step_delay, sim.progress_steps
    sim.step_delay, sim.progress_steps = seconds, ()
    try:
        yield
    finally:
        sim.wait_idle(timeout=seconds + 10)
        sim.step_delay, sim.progress_steps = saved


def test_given_provider_rejects_with_400_then_job_fails_with_its_message_and_is_not_retried(
    stack, sim, s3, table, bucket
):
    sim.set_faults(reject_inpaint="Invalid parent task")
    job_id = new_job_id("rejected")
    _upload(stack, s3, bucket, table, job_id)

    item = wait_for_job(table, job_id, timeout=15)

    assert item["status"] == "FAILED", item
    assert item["error"]["code"] == "PROVIDER_REJECTED"
    assert item["error"]["stage"] == "submit"
    assert "Invalid parent task" in item["error"]["message"]
    error_doc = json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json"))
    assert error_doc == {"job_id": job_id, "status": "FAILED", "error": dict(item["error"])}
    wait_for_queue_drained(stack)  # every event handled: no retry is pending either
    assert sim.stats()["inpaint_calls"] == 1
    assert sim.stats()["tasks_created"] == 0
    assert job_item(table, job_id)["status"] == "FAILED"


@pytest.mark.parametrize(
    ("fault", "calls"),
    [({"rate_limit_next": 2}, 3), ({"server_error_next": 1, "server_error_status": 503}, 2)],
    ids=["two-rate-limits", "one-503"],
)
def test_given_transient_provider_errors_then_submit_retries_within_budget_and_job_completes(
    stack, sim, s3, table, bucket, fault, calls
):
    sim.set_faults(**fault)
    job_id = new_job_id("transient")
    _upload(stack, s3, bucket, table, job_id)

    item = wait_for_job(table, job_id)

    assert item["status"] == "COMPLETED", item
    wait_for_queue_drained(stack)
    stats = sim.stats()
    assert stats["inpaint_calls"] == calls, stats
    assert stats["tasks_created"] == 1, stats


def test_given_outage_longer_than_retry_budget_then_event_is_redelivered_and_job_completes_once_it_ends(
    stack, sim, s3, table, bucket, monkeypatch
):
    sim.set_faults(server_error_next=100, server_error_status=503)
    job_id = new_job_id("outage")
    held = _items_when_held(stack, table, job_id, monkeypatch)
    _upload(stack, s3, bucket, table, job_id)

    wait_until(lambda: sim.stats()["inpaint_calls"] >= 1, 15, message="a first /inpaint call")
    first_invocation_over = time.monotonic() + RETRY_BUDGET_SECONDS + 0.3
    calls_then = wait_until(
        lambda: time.monotonic() >= first_invocation_over and sim.stats()["inpaint_calls"],
        10,
        message="the first invocation's budget to run out",
    )
    # A call after the first invocation's budget ran out can only come from a redelivered message.
    wait_until(lambda: sim.stats()["inpaint_calls"] > calls_then, 15, message="a redelivery of the S3 event")

    item = job_item(table, job_id)
    assert item["status"] == "RECEIVED", item
    assert "task_id" not in item
    assert sim.stats()["tasks_created"] == 0
    # Held in the queue, the item said why and about when it would be tried again (the stack's 1 s).
    assert held and held[0].get("held_reason") == "PROVIDER_UNAVAILABLE" and held[0].get("held_until"), held
    assert parse_timestamp(held[0]["held_until"]) - parse_timestamp(held[0]["held_at"]) == timedelta(seconds=1)

    sim.set_faults(server_error_next=0)
    item = wait_for_job(table, job_id, timeout=20)

    assert item["status"] == "COMPLETED", item
    assert "held_until" not in item
    wait_for_queue_drained(stack)
    assert sim.stats()["tasks_created"] == 1
    assert len(sim.inpaint_requests) == 1


def test_given_500_on_submit_then_never_resent_and_flagged_ambiguous(stack, sim, s3, table, bucket):
    sim.set_faults(server_error_next=1, server_error_status=500)
    job_id = new_job_id("answered-500")
    keys = _upload(stack, s3, bucket, table, job_id)

    item = wait_for_job(table, job_id, ("SUBMITTED", "PROCESSING", "COMPLETED", "FAILED"), timeout=15)

    try:
        assert item["status"] == "SUBMITTED", item
        assert item["needs_attention"] is True
        assert item["error"]["code"] == "SUBMIT_AMBIGUOUS" and "500" in item["error"]["message"]
        redelivery = sqs_event_for(stack, [s3_notification(bucket, key) for key in keys])
        for _ in range(3):
            assert stack.functions["submit"].invoke(redelivery) == {"batchItemFailures": []}
        wait_for_queue_drained(stack)
        assert sim.stats()["inpaint_calls"] == 1, "a 500 may hide a paid task: never resent"
        assert job_item(table, job_id)["status"] == "SUBMITTED"
    finally:
        # What the reconciler does after the ambiguity window (an hour): end the job and free its slot.
        error = JobError("SUBMIT_AMBIGUOUS", "test over", ErrorStage.RECONCILE)
        claim = job_item(table, job_id).get("submit_claim")
        JobTable(table).mark_failed(job_id, error, datetime.now(UTC), JudgedStage(JobStage.INPAINT, claim=claim))


def test_given_submit_answer_lost_to_read_timeout_then_never_resubmitted_flagged_and_rescued_by_late_webhook(
    stack, sim, s3, table, bucket
):
    # The simulator creates the task, then answers only after the client's read timeout. Its webhooks are
    # made late too: with the fixture's 0.02 s steps they would complete the job before the timeout, and
    # the ambiguity (whose write requires status RECEIVED) would never be recorded.
    sim.set_faults(inpaint_response_delay=READ_TIMEOUT_SECONDS + 2)
    job_id = new_job_id("ambiguous")
    with late_provider_webhooks(sim, seconds=READ_TIMEOUT_SECONDS + 3):
        keys = _upload(stack, s3, bucket, table, job_id)

        item = wait_for_job(table, job_id, ("SUBMITTED", "PROCESSING", "COMPLETED", "FAILED"), timeout=15)

        assert item["status"] == "SUBMITTED", item
        assert item["needs_attention"] is True
        assert item["error"]["code"] == "SUBMIT_AMBIGUOUS"
        assert "task_id" not in item
        # AWS redelivers the job's S3 events (at least once, maybe many times): none may resubmit.
        redelivery = sqs_event_for(stack, [s3_notification(bucket, key) for key in keys])
        for _ in range(5):
            assert stack.functions["submit"].invoke(redelivery) == {"batchItemFailures": []}
        wait_for_queue_drained(stack)
        assert sim.stats()["inpaint_calls"] == 1
        assert sim.stats()["tasks_created"] == 1
        assert job_item(table, job_id)["status"] == "SUBMITTED"

        # The task was really created and its (late) webhook carries the job's secret: it completes the job.
        item = wait_for_job(table, job_id, timeout=20)

    assert item["status"] == "COMPLETED", item
    assert "needs_attention" not in item and "error" not in item
    task = sim.task(item["task_id"])
    assert task is not None and task["parent_task_id"] == "parent-task-1"
    assert "results/" + job_id + "/result.json" in keys_under(s3, bucket, f"results/{job_id}/")
    stats = sim.stats()
    assert stats["inpaint_calls"] == 1, stats
    assert stats["tasks_created"] == 1, stats


def test_given_error_json_write_fails_once_after_provider_rejection_then_redelivery_still_writes_it(
    stack, sim, s3, table, bucket, monkeypatch
):
    """FAILED is recorded first and error.json second: if that write fails, the redelivered event (which
    finds the job final, and must not call the provider again) still writes error.json."""
    sim.set_faults(reject_inpaint="Invalid parent task")
    job_id = new_job_id("rejected-crash")
    failures = fail_error_json_write_once(stack, job_id, monkeypatch)
    _upload(stack, s3, bucket, table, job_id)
    assert wait_for_job(table, job_id)["status"] == "FAILED"
    wait_until(lambda: failures, 10, message="the failed error.json write")
    wait_for_queue_drained(stack)  # the failed message came back (after ~2 s) and was handled again

    assert sim.stats()["inpaint_calls"] == 1
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/error.json"]
    item = job_item(table, job_id)
    assert json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json")) == {
        "job_id": job_id,
        "status": "FAILED",
        "error": dict(item["error"]),
    }
