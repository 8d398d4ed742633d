"""The completion worker is the one path that completes a job: webhooks and the reconciler only hand
tasks to it. What it trusts is Fetch, never the report that woke it; one copier at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from vary_region.aws.job_files import JobFiles
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.stages import JobStage
from vary_region.store.job_table import JobTable, JudgedStage

from tests.support.builders import new_job_id, post_webhook
from tests.support.faults import start_job_in_flight
from tests.support.waits import final_body, get_job, job_item, keys_under, run_reconciler_until, wait_until


def test_given_a_final_webhook_while_fetch_says_running_then_the_job_stays_open_and_completes_later(
    stack, sim, s3, table, bucket, provider
):
    sim.step_delay = 3.0  # the provider is still busy with the task when the "final" report arrives
    try:
        job = start_job_in_flight(s3, bucket, table, sim, prefix="early-final")
        premature = {
            "task_id": job.task_id,
            "task_type": "inpaint",
            "original_image_url": f"{sim.base_url}/images/{job.task_id}/grid.png",
            "image_urls": [f"{sim.base_url}/images/{job.task_id}/{i}.png" for i in range(1, 5)],
        }
        answer = post_webhook(stack, job.job_id, premature, secret=job.secret)
        assert answer.status_code == 200 and answer.json()["outcome"] == "queued"
        # The worker asked Fetch, heard "still running", and recorded that instead of copying (every
        # webhook of this job is dropped: only the worker can have moved it to PROCESSING).
        item = wait_until(
            lambda: (i := get_job(table, job.job_id)) and i["status"] == "PROCESSING" and i, message="PROCESSING"
        )
        assert provider.fetches(job.task_id) >= 1
        assert provider.image_gets(job.task_id) == 0
        assert sim.task(job.task_id)["status"] != "finished"
        assert item.get("error") is None and not item.get("copy_failures")
    finally:
        sim.step_delay = 0.02

    item = run_reconciler_until(stack, table, job.job_id, lambda i: i["status"] in ("COMPLETED", "FAILED"), timeout=30)
    assert item["status"] == "COMPLETED", item.get("error")


def test_given_a_final_report_when_fetch_answers_running_then_progress_is_recorded_and_it_completes_once_done(
    stack, sim, s3, table, bucket, provider, monkeypatch
):
    """The same guarantee as above without a race against the simulator's clock: Fetch is made to
    answer "running" for as long as the test needs, whatever the machine's speed."""
    from vary_region.aws.completion_queue import CompletionRequest
    from vary_region.completion.worker import CompletionOutcome
    from vary_region.provider.task_result import parse_task_result

    job = start_job_in_flight(s3, bucket, table, sim, prefix="fetch-running")
    finished = final_body(sim, job.task_id)  # the provider is done; its final webhook was lost
    running = parse_task_result(
        {"task_id": job.task_id, "task_type": finished.get("task_type"), "status": "processing", "percentage": "40"}
    )
    completer = stack.functions["completion"].module.completer
    monkeypatch.setattr(completer._apiframe, "fetch", lambda task_id, deadline=None: running)
    final_report = CompletionRequest(job.job_id, job.task_id)  # what a final webhook hands the worker

    result = completer.complete(final_report)

    assert result.outcome is CompletionOutcome.RETRY_LATER, result
    item = job_item(table, job.job_id)
    assert (item["status"], item.get("percentage"), item["task_id"]) == ("PROCESSING", 40, job.task_id)
    assert item.get("error") is None and not item.get("copy_failures")
    assert provider.image_gets(job.task_id) == 0
    assert keys_under(s3, bucket, f"results/{job.job_id}/") == []

    monkeypatch.undo()  # Fetch now tells the truth: the task finished
    assert completer.complete(final_report).outcome is CompletionOutcome.COMPLETED
    assert job_item(table, job.job_id)["status"] == "COMPLETED"


def test_given_a_copy_lease_held_then_a_second_copier_cannot_take_it_until_it_expires(stack):
    store = JobTable(boto3.resource("dynamodb").Table(stack.info.table), max_active_tasks=1000)
    now = datetime.now(UTC)
    job_id = new_job_id("lease")
    store.record_received(job_id, now)
    assert store.claim_submission(job_id, "tok", "hash", "parent", None, {}, now)
    assert store.mark_submitted(job_id, "tok", "task-lease", now)

    assert store.acquire_copy_lease(job_id, "task-lease", "first", now, seconds=60)
    assert not store.acquire_copy_lease(job_id, "task-lease", "second", now, seconds=60)
    later = now.replace(year=now.year + 1)
    assert store.acquire_copy_lease(job_id, "task-lease", "third", later, seconds=60), "an expired lease is free"
    store.mark_failed(
        job_id, JobError("TEST_CLEANUP", "test", ErrorStage.COPY), now, JudgedStage(JobStage.INPAINT, "task-lease")
    )


class _RefusingS3:
    """An S3 client whose HeadObject answers with the given error code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def head_object(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": self.code, "Message": "refused"}}, "HeadObject")


@pytest.mark.parametrize("code", ["403", "AccessDenied", "SlowDown", "503", "InternalError"])
def test_given_head_object_refused_or_throttled_then_the_document_is_not_taken_for_missing(code):
    with pytest.raises(ClientError):
        JobFiles(_RefusingS3(code), "bucket").object_size("results/job/error.json")


@pytest.mark.parametrize("code", ["404", "NoSuchKey", "NotFound"])
def test_given_head_object_not_found_then_the_document_is_missing(code):
    assert JobFiles(_RefusingS3(code), "bucket").object_size("results/job/error.json") is None


def test_given_fetch_answers_about_another_task_then_the_job_is_not_completed_with_that_result(
    stack, sim, s3, table, bucket, monkeypatch
):
    from vary_region.aws.completion_queue import CompletionRequest
    from vary_region.completion.worker import CompletionOutcome
    from vary_region.provider.task_result import parse_task_result

    other = start_job_in_flight(s3, bucket, table, sim, prefix="other-task")
    job = start_job_in_flight(s3, bucket, table, sim, prefix="asks-fetch")
    others_result = parse_task_result(final_body(sim, other.task_id))
    completer = stack.functions["completion"].module.completer
    monkeypatch.setattr(completer._apiframe, "fetch", lambda task_id, deadline=None: others_result)

    result = completer.complete(CompletionRequest(job.job_id, job.task_id))

    assert result.outcome is CompletionOutcome.RETRY_LATER
    assert job_item(table, job.job_id)["status"] in ("SUBMITTED", "PROCESSING")
    assert keys_under(s3, bucket, f"results/{job.job_id}/") == []
    monkeypatch.undo()
    for flight in (job, other):
        run_reconciler_until(stack, table, flight.job_id, lambda i: i["status"] == "COMPLETED", timeout=30)
