"""The sample events in events/ (for `sam local invoke -e`) drive the real handlers as AWS would."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from vary_region.core.stages import JobStage
from vary_region.provider.webhook_auth import hash_webhook_secret
from vary_region.store.job_table import JobTable, JudgedStage

from tests.support.waits import job_item, wait_for_job

EVENTS = Path(__file__).resolve().parents[3] / "events"
TASK_ID = "29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a"  # the task id the webhook samples carry


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@pytest.mark.v1_only  # the sample webhook events are v1's payloads
def test_the_sample_events_drive_the_real_handlers(stack, table):
    submit, webhook = stack.functions["submit"], stack.functions["webhook"]

    # Upload notifications, direct from S3 and through SQS: the job is seen, waits for its files.
    for name in ("s3-put-job-json.json", "s3-put-mask.json", "sqs-s3-put-job-json.json", "sqs-s3-put-mask.json"):
        assert submit.invoke(event(name)) == {"batchItemFailures": []}, name
    assert job_item(table, "demo-job-1")["status"] == "RECEIVED"
    assert submit.invoke(event("s3-put-inline-job.json")) == {"batchItemFailures": []}
    assert job_item(table, "demo job+2")["status"] == "RECEIVED", "the URL-encoded key is decoded"
    for name in ("s3-test-event.json", "sqs-s3-test-event.json"):
        assert submit.invoke(event(name)) == {"batchItemFailures": []}, name
    # A chain's next stage handed to the submit function (the job's file is not in this bucket: it waits).
    assert submit.invoke(event("sqs-next-stage.json")) == {"batchItemFailures": []}
    assert job_item(table, "demo-chain-1")["status"] == "RECEIVED"

    # The webhook samples belong to demo-job-1 submitted as task 29e983ca-... with the sample secret.
    store = JobTable(boto3.resource("dynamodb").Table(stack.info.table), max_active_tasks=1000)
    now = datetime.now(UTC)
    assert store.claim_submission("demo-job-1", "tok", hash_webhook_secret("demo-webhook-secret"), "p", None, {}, now)
    assert store.mark_submitted("demo-job-1", "tok", TASK_ID, now)

    assert webhook.invoke(event("webhook-bad-secret.json"))["statusCode"] == 401
    assert webhook.invoke(event("webhook-progress.json"))["statusCode"] == 200
    item = job_item(table, "demo-job-1")
    assert (item["status"], int(item["percentage"])) == ("PROCESSING", 80)
    # Final webhooks are only signals, handed to the completion worker.
    for name in ("webhook-failed.json", "webhook-finished.json"):
        answer = webhook.invoke(event(name))
        assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"outcome": "queued"}), name
    # The worker re-reads the result through Fetch, and the simulator has no task 29e983ca-...: the
    # request is tried again later and the job does not move.
    assert stack.functions["completion"].invoke(event("sqs-completion-request.json")) == {"batchItemFailures": []}
    assert job_item(table, "demo-job-1")["status"] == "PROCESSING"
    store.mark_failed("demo-job-1", store_error(), now, JudgedStage(JobStage.INPAINT, TASK_ID))

    # A job requested by an event, as the rule puts it on the submit queue: its file is written to the
    # inbox, whose notification runs it (its parent is one the simulator makes up).
    assert submit.invoke(event("sqs-job-requested.json")) == {"batchItemFailures": []}
    assert wait_for_job(table, "order-4711-balloon", timeout=30)["status"] == "COMPLETED"
    # The publisher turns the stream's job record into an event and ignores the slot counter's.
    published = stack.functions["publisher"].invoke(event("dynamodb-stream-job-completed.json"))
    assert published == {"batchItemFailures": []}

    report = stack.functions["reconciler"].invoke(event("reconciler-schedule.json"))
    assert "examined" in report
    store.mark_rejected("demo job+2", store_error(), now)
    store.mark_rejected("demo-chain-1", store_error(), now)


def store_error() -> Any:
    from vary_region.core.errors import ErrorStage, JobError

    return JobError("TEST_CLEANUP", "sample-event test", ErrorStage.INTAKE)
