"""Which stream records become state-change events, and what the events say: the documented fields,
nothing for progress alone or for items that are not jobs, and entries kept under EventBridge's limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer
from vary_region.core import strict_json
from vary_region.publisher.state_change import MAX_ENTRY_BYTES, SOURCE, STATE_CHANGE, state_change
from vary_region.submit.requested import JobRequestInvalid, RequestedJob, requested_job

BUCKET = "jobs-bucket"
_serializer = TypeSerializer()


def _image(item: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if item is None else {k: _serializer.serialize(v) for k, v in item.items()}


def record(new: dict[str, Any] | None, old: dict[str, Any] | None = None, name: str = "MODIFY") -> dict[str, Any]:
    change: dict[str, Any] = {"SequenceNumber": "1200000000000000000123", "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if new is not None:
        change["NewImage"] = _image(new)
    if old is not None:
        change["OldImage"] = _image(old)
    return {"eventName": name, "dynamodb": change}


JOB = {"job_id": "job-1", "updated_at": "2026-12-01T12:00:00.000Z", "metadata_json": json.dumps({"order": 7})}


def test_a_new_job_is_an_event_with_the_documented_fields():
    change = state_change(record(JOB | {"status": "RECEIVED"}, name="INSERT"), BUCKET)

    assert change is not None and change.job_id == "job-1" and change.sequence == "1200000000000000000123"
    assert change.detail == {
        "job_id": "job-1",
        "status": "RECEIVED",
        "previous_status": None,
        "stage": None,
        "task_id": None,
        "percentage": None,
        "updated_at": "2026-12-01T12:00:00.000Z",
        "sequence": "1200000000000000000123",
        "bucket": BUCKET,
        "metadata": {"order": 7},
    }
    entry = change.entry("my-bus")
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (SOURCE, STATE_CHANGE, "my-bus")
    assert json.loads(entry["Detail"]) == change.detail


def test_a_completed_job_carries_its_results_and_credits():
    result = {"result_json": "results/job-1/result.json", "images": {"grid": "results/job-1/grid.png"}}
    new = JOB | {"status": "COMPLETED", "task_id": "t-1", "percentage": 100, "result": result}
    new |= {"credits_reserved": {"inpaint": 4}, "credits_spent": {"inpaint": 4}}

    change = state_change(record(new, JOB | {"status": "PROCESSING", "percentage": 75}), BUCKET)

    assert change is not None
    assert change.detail["results"] == result and change.detail["percentage"] == 100
    assert change.detail["previous_status"] == "PROCESSING"
    assert change.detail["credits"] == {"reserved": {"inpaint": 4}, "spent": {"inpaint": 4}}


@pytest.mark.parametrize("status", ["FAILED", "REJECTED"])
def test_an_unsuccessful_job_carries_its_error(status):
    error = {"code": "MASK_BLANK", "message": "no white pixel", "stage": "intake"}

    change = state_change(record(JOB | {"status": status, "error": error}, JOB | {"status": "RECEIVED"}), BUCKET)

    assert change is not None and change.detail["error"] == error


def test_a_chain_moving_on_to_its_next_stage_is_an_event():
    old = JOB | {"status": "PROCESSING", "stage": "imagine"}
    change = state_change(record(JOB | {"status": "PROCESSING", "stage": "upscale"}, old), BUCKET)

    assert change is not None and change.detail["stage"] == "upscale"


def test_a_job_held_back_is_an_event_with_its_reason_and_so_is_a_new_reason():
    held = JOB | {"status": "RECEIVED", "held_at": "2026-12-01T12:00:01.000Z", "held_reason": "BUDGET_EXCEEDED"}

    first = state_change(record(held, JOB | {"status": "RECEIVED"}), BUCKET)
    again = state_change(record(held | {"updated_at": "x"}, held), BUCKET)
    other = state_change(record(held | {"held_reason": "PROVIDER_SLOTS_FULL"}, held), BUCKET)

    assert first is not None and first.detail["held_reason"] == "BUDGET_EXCEEDED"
    assert again is None, "held again for the same reason: no news"
    assert other is not None and other.detail["held_reason"] == "PROVIDER_SLOTS_FULL"


def test_a_held_jobs_event_says_until_when_it_is_held():
    held = JOB | {"status": "RECEIVED", "held_at": "2026-12-01T12:00:01.000Z", "held_reason": "BUDGET_EXCEEDED"}
    until = held | {"held_until": "2026-12-02T00:00:00.000Z"}

    change = state_change(record(until, JOB | {"status": "RECEIVED"}), BUCKET)
    before = state_change(record(held, JOB | {"status": "RECEIVED"}), BUCKET)  # held before held_until existed
    claimed = state_change(record(JOB | {"status": "SUBMITTED", "held_until": "x"}, until), BUCKET)

    assert change is not None and change.detail.get("held_until") == "2026-12-02T00:00:00.000Z"
    assert change.detail["held_reason"] == "BUDGET_EXCEEDED"
    assert before is not None and "held_until" not in before.detail
    assert claimed is not None and "held_until" not in claimed.detail, "only a held job's event has it"


@pytest.mark.parametrize(
    "rec",
    [
        # The first claim names the job's first stage: the job is still RECEIVED, no news.
        record(JOB | {"status": "RECEIVED", "stage": "imagine", "submit_claim": "t"}, JOB | {"status": "RECEIVED"}),
        record(JOB | {"status": "PROCESSING", "percentage": 50}, JOB | {"status": "PROCESSING", "percentage": 25}),
        record({"job_id": "job-1"}, name="INSERT"),  # moto: the key-only first half of the item's creation
        record({"job_id": "/provider-slots", "in_use": 3}, {"job_id": "/provider-slots", "in_use": 2}),
        record({"job_id": "/credits/day/2026-12-01", "reserved": 8, "status": "x"}, name="INSERT"),
        record(None, JOB | {"status": "COMPLETED"}, name="REMOVE"),  # TTL
    ],
    ids=["first-claim", "progress-only", "key-only-insert", "slot-counter", "ledger", "ttl-removal"],
)
def test_no_event_for_what_is_not_a_transition_of_a_job(rec):
    assert state_change(rec, BUCKET) is None


def test_an_entry_over_eventbridges_limit_leaves_its_metadata_out():
    huge = JOB | {"status": "RECEIVED", "metadata_json": json.dumps({"blob": "x" * MAX_ENTRY_BYTES})}
    change = state_change(record(huge, name="INSERT"), BUCKET)
    assert change is not None

    entry = change.entry("bus")

    assert len(entry["Detail"]) < MAX_ENTRY_BYTES
    detail = json.loads(entry["Detail"])
    assert detail["metadata"] is None and detail["metadata_truncated"] is True and detail["job_id"] == "job-1"


def test_an_item_stored_with_nan_in_its_metadata_still_makes_an_event_of_strict_json():
    """An item from before NaN was refused at intake: its event is still valid JSON (a NaN reads as null)."""
    old = JOB | {"status": "RECEIVED", "metadata_json": '{"score": NaN, "order": 7}'}
    change = state_change(record(old, name="INSERT"), BUCKET)
    assert change is not None

    detail = strict_json.loads(change.entry("bus")["Detail"])

    assert detail["metadata"] == {"score": None, "order": 7}


def test_an_entry_refuses_to_write_nan_rather_than_put_invalid_json():
    change = state_change(record(JOB | {"status": "RECEIVED"}, name="INSERT"), BUCKET)
    assert change is not None

    with pytest.raises(ValueError, match="not JSON compliant"):
        change._replace(detail=change.detail | {"metadata": {"x": float("nan")}}).entry("bus")


def test_a_requested_job_file_is_never_written_with_nan():
    with pytest.raises(ValueError, match="not JSON compliant"):
        RequestedJob("req-1", {"job_id": "req-1", "metadata": {"x": float("inf")}}).job_file()


def test_a_job_requested_by_an_event_is_read_from_the_whole_event_or_the_bare_body():
    body = {"job_id": "req-1", "parent_task_id": "p", "mask": {"regions": [{"rect": [0, 0, 8, 8]}]}}
    event = {"version": "0", "detail-type": "Vary Region Job Requested", "source": "my.app", "detail": body}

    for message in (event, body):
        job = requested_job(message)
        assert job is not None and job.job_id == "req-1"
        assert json.loads(job.job_file()) == {k: v for k, v in body.items() if k != "job_id"}


@pytest.mark.parametrize(
    "message",
    [
        {"Records": [{"eventName": "ObjectCreated:Put"}]},
        {"held_job": {"key": "inbox/a.json"}},
        {"detail-type": "Object Created", "detail": {"object": {"key": "inbox/a.json"}}},
        {"Event": "s3:TestEvent"},
        "a string",
    ],
)
def test_other_queue_messages_are_no_job_requests(message):
    assert requested_job(message) is None


@pytest.mark.parametrize(
    "message",
    [
        {"detail-type": "Vary Region Job Requested", "detail": {"parent_task_id": "p"}},
        {"detail-type": "Vary Region Job Requested", "detail": "not an object"},
        {"job_id": "  "},
        {"job_id": 42},
    ],
)
def test_a_job_request_without_a_job_id_is_refused(message):
    with pytest.raises(JobRequestInvalid):
        requested_job(message)
