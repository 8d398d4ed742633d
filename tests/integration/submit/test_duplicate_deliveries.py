"""Every paid APIFRAME call is made at most once per job, however often AWS redelivers: the same S3
event arriving 50 times at once, both files landing at the same moment, a re-upload after the job is
done, and the s3:TestEvent that S3 sends when the notification is configured."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from vary_region_local.lambda_runtime import REPO_ROOT, LocalFunction

from tests.support.builders import job_json, mask_png, new_job_id, put_files, s3_notification, sqs_event_for
from tests.support.waits import (
    get_job,
    job_ids_in_table,
    job_item,
    keys_under,
    read_error_json,
    read_json,
    settle_stack,
    wait_for_job,
    wait_for_queue_drained,
)

DELIVERIES = 50
CONTAINERS = DELIVERIES  # each a separate module instance, i.e. a separate Lambda execution environment


@pytest.fixture(autouse=True)
def _settled(stack, sim):
    """Counts of paid calls below belong to this test alone."""
    settle_stack(stack, sim)


def test_given_same_s3_event_delivered_50_times_concurrently_then_exactly_one_submission(stack, sim, s3, table, bucket):
    containers = [LocalFunction(f"submit-dup-{i}", "submit", 60) for i in range(CONTAINERS)]
    job_id = new_job_id("dup 50 ü")
    parent = f"parent-{job_id[-10:]}"
    mask_key = f"inbox/{job_id}/mask.png"
    event = sqs_event_for(stack, [s3_notification(bucket, mask_key)])
    start = threading.Barrier(DELIVERIES)

    def deliver(i: int) -> Any:
        start.wait(timeout=30)
        return containers[i % CONTAINERS].invoke(event)

    # The stack reacts to the uploads too (its own two notifications), racing the 50 duplicates.
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/job.json", job_json(parent_task_id=parent), "application/json"),
            (mask_key, mask_png(), "image/png"),
        ],
    )
    with ThreadPoolExecutor(max_workers=DELIVERIES) as pool:
        answers = list(pool.map(deliver, range(DELIVERIES)))

    item = wait_for_job(table, job_id)
    wait_for_queue_drained(stack)
    sim.wait_idle(timeout=10)

    assert answers == [{"batchItemFailures": []}] * DELIVERIES
    assert item["status"] == "COMPLETED", item
    stats = sim.stats()
    assert stats["inpaint_calls"] == 1, stats
    assert stats["tasks_created"] == 1, stats
    assert [request["parent_task_id"] for request in sim.inpaint_requests] == [parent]
    assert read_json(s3, bucket, f"results/{job_id}/result.json")["task_id"] == item["task_id"]
    assert job_item(table, job_id)["completed_at"] == item["completed_at"]  # completed once, never again


def test_given_both_files_uploaded_at_the_same_moment_then_exactly_one_submission_per_job(
    stack, sim, s3, table, bucket
):
    jobs = {new_job_id(f"same-moment-{n}"): f"parent-same-moment-{n}" for n in range(5)}
    uploads = []
    for job_id, parent in jobs.items():
        uploads.append((f"inbox/{job_id}/job.json", job_json(parent_task_id=parent), "application/json"))
        uploads.append((f"inbox/{job_id}/mask.png", mask_png(), "image/png"))
    start = threading.Barrier(len(uploads))

    def upload(file: tuple[str, bytes, str]) -> None:
        start.wait(timeout=30)
        put_files(s3, bucket, [file])

    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        list(pool.map(upload, uploads))

    items = {job_id: wait_for_job(table, job_id) for job_id in jobs}
    wait_for_queue_drained(stack)
    sim.wait_idle(timeout=10)

    assert {job_id: item["status"] for job_id, item in items.items()} == dict.fromkeys(jobs, "COMPLETED")
    stats = sim.stats()
    assert stats["inpaint_calls"] == len(jobs), stats
    assert stats["tasks_created"] == len(jobs), stats
    assert sorted(request["parent_task_id"] for request in sim.inpaint_requests) == sorted(jobs.values())
    assert len({item["task_id"] for item in items.values()}) == len(jobs)


def test_given_completed_job_when_job_json_is_uploaded_again_then_nothing_changes(stack, sim, s3, table, bucket):
    job_id = new_job_id("reupload")
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/job.json", job_json(), "application/json"),
            (f"inbox/{job_id}/mask.png", mask_png(), "image/png"),
        ],
    )
    done = wait_for_job(table, job_id, ("COMPLETED",))
    wait_for_queue_drained(stack)
    sim.wait_idle(timeout=10)
    result_key = f"results/{job_id}/result.json"
    before = s3.get_object(Bucket=bucket, Key=result_key)
    before_body = before["Body"].read()
    before_results = keys_under(s3, bucket, f"results/{job_id}/")

    # The same file again, then a changed one (a user "retrying" with another prompt).
    put_files(s3, bucket, [(f"inbox/{job_id}/job.json", job_json(), "application/json")])
    put_files(s3, bucket, [(f"inbox/{job_id}/job.json", job_json(prompt="a blue balloon"), "application/json")])
    wait_for_queue_drained(stack)

    assert sim.stats()["inpaint_calls"] == 1
    assert get_job(table, job_id) == done
    after = s3.get_object(Bucket=bucket, Key=result_key)
    assert after["ETag"] == before["ETag"]
    assert after["Body"].read() == before_body
    assert keys_under(s3, bucket, f"results/{job_id}/") == before_results


def test_given_s3_test_event_then_submit_ignores_it(stack, sim, table):
    event = json.loads((REPO_ROOT / "events" / "sqs-s3-test-event.json").read_text())
    jobs_before = job_ids_in_table(table)

    answer = stack.functions["submit"].invoke(event)

    assert answer == {"batchItemFailures": []}
    assert job_ids_in_table(table) == jobs_before
    assert sim.stats()["inpaint_calls"] == 0


def test_given_rejected_job_when_fixed_files_are_uploaded_again_then_it_stays_rejected_and_nothing_is_submitted(
    stack, sim, s3, table, bucket
):
    job_id = new_job_id("rejected-reupload")
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/mask.png", mask_png(), "image/png"),
            (f"inbox/{job_id}/job.json", b'{"prompt": "no parent"}', "application/json"),
        ],
    )
    rejected = wait_for_job(table, job_id, ("REJECTED",))
    wait_for_queue_drained(stack)

    # A finished job never changes again: a fixed job.json (and the mask again) is not a new submission.
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/job.json", job_json(), "application/json"),
            (f"inbox/{job_id}/mask.png", mask_png(), "image/png"),
        ],
    )
    wait_for_queue_drained(stack)

    assert get_job(table, job_id) == rejected
    assert sim.stats()["inpaint_calls"] == 0
    assert read_error_json(s3, bucket, job_id)["error"]["code"] == "PARENT_TASK_ID_MISSING"


@pytest.fixture()
def failing_job(stack: Any, bucket: str, monkeypatch: Any) -> str:
    """A message about a job whose item cannot be read (the table throttling it past its retries):
    handling it fails, and a redelivery may succeed. (An unreadable body is refused, never retried:
    no redelivery makes it JSON.)"""
    from vary_region.store.job_table import JobTableError

    job_id = new_job_id("throttled")
    store = stack.functions["submit"].module.submitter._store
    real_get = store.get

    def get(wanted: str) -> Any:
        if wanted == job_id:
            raise JobTableError("ProvisionedThroughputExceededException (simulated)")
        return real_get(wanted)

    monkeypatch.setattr(store, "get", get)
    return json.dumps(s3_notification(bucket, f"inbox/{job_id}/job.json"))


def test_given_a_batch_with_a_failing_message_then_only_that_message_goes_back_to_the_queue(
    stack, sim, s3, table, bucket, failing_job
):
    job_id = new_job_id("batch")
    # A notification for a job whose files are not there yet: handling it leaves the job RECEIVED.
    event = sqs_event_for(stack, [s3_notification(bucket, f"inbox/{job_id}/job.json")])
    failing = dict(event["Records"][0], messageId="failing-1", body=failing_job)
    event["Records"].insert(0, failing)

    answer = stack.functions["submit"].invoke(event)

    # The failing message alone is retried (then dead-lettered); the one after it was handled in this batch.
    assert answer == {"batchItemFailures": [{"itemIdentifier": "failing-1"}]}
    assert job_item(table, job_id)["status"] == "RECEIVED"
    put_files(s3, bucket, [(f"inbox/{job_id}/mask.png", mask_png(), "image/png")])
    put_files(s3, bucket, [(f"inbox/{job_id}/job.json", job_json(), "application/json")])
    assert wait_for_job(table, job_id)["status"] == "COMPLETED"


def test_given_a_batch_whose_every_message_fails_then_the_invocation_fails(stack, sim, table, failing_job):
    event = sqs_event_for(stack, [{"Records": []}])
    event["Records"][0]["body"] = failing_job
    jobs_before = job_ids_in_table(table)

    # An error (not a full failure list): Lambda's Errors metric and the submit-errors alarm see it.
    with pytest.raises(Exception, match="all 1 messages of the batch failed"):
        stack.functions["submit"].invoke(event)
    assert job_ids_in_table(table) == jobs_before


@contextlib.contextmanager
def function_log_lines() -> Iterator[list[dict[str, Any]]]:
    """The functions' log lines (Powertools JSON, with their appended keys) while the block runs."""
    service_logger = logging.getLogger("vary-region")
    powertools_handler = next(h for h in service_logger.handlers if h.formatter is not None)
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(powertools_handler.format(record)))

    collector = Collect()
    service_logger.addHandler(collector)
    try:
        yield lines
    finally:
        service_logger.removeHandler(collector)


def test_given_a_message_failing_before_it_names_a_job_then_its_error_log_names_no_job(
    stack, sim, s3, table, bucket, monkeypatch
):
    job_id = new_job_id("before-failure")
    event = sqs_event_for(stack, [s3_notification(bucket, f"inbox/{job_id}/job.json")])
    event["Records"].append(dict(event["Records"][0], messageId="failing-2", body='{"Records": []}'))
    submit = stack.functions["submit"].module
    real_keys = submit.uploaded_keys

    def uploaded_keys(body: Any) -> list[str]:
        if body == {"Records": []}:
            raise OSError("simulated: the message could not be read")
        return real_keys(body)

    monkeypatch.setattr(submit, "uploaded_keys", uploaded_keys)

    with function_log_lines() as lines:
        answer = stack.functions["submit"].invoke(event)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "failing-2"}]}
    failure = next(line for line in lines if line["message"] == "queue message failed")
    assert failure["message_id"] == "failing-2"
    assert "job_id" not in failure  # the job handled just before is not this failure's job
    put_files(s3, bucket, [(f"inbox/{job_id}/mask.png", mask_png(), "image/png")])
    put_files(s3, bucket, [(f"inbox/{job_id}/job.json", job_json(), "application/json")])
    assert wait_for_job(table, job_id)["status"] == "COMPLETED"
