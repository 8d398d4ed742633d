"""Given the local stack's bus (moto's EventBridge, delivering to SQS targets) and the job table's stream
(moto's DynamoDB Streams, polled as Lambda's event source mapping would), when jobs run, fail, are
requested by events and the publisher dies, then a job's whole life arrives as state-change events
with the documented fields, nothing is lost to a crash before the publish, and a job requested by an
event (or by the same body on the submit queue) runs exactly like an inbox drop."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.support.builders import mask_png, new_job_id, put_files, upload_job
from tests.support.recorders import ProviderRecorder
from tests.support.waits import (
    FINAL_STATUSES,
    get_job,
    job_item,
    keys_under,
    read_error_json,
    settle_stack,
    wait_for_job,
    wait_until,
)

STATE_CHANGE = "Vary Region Job State Change"
REQUESTED = "Vary Region Job Requested"


class EventTap:
    """A queue subscribed to the bus by a rule of the test's own: what a consumer of the events gets."""

    def __init__(self, stack: Any) -> None:
        self.bus = stack.info.event_bus_name
        self.events = boto3.client("events")
        self.sqs = boto3.client("sqs")
        name = f"tap-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.rule = name
        pattern = {"source": ["vary-region"], "detail-type": [STATE_CHANGE]}
        self.events.put_rule(Name=name, EventBusName=self.bus, EventPattern=json.dumps(pattern))
        self.events.put_targets(Rule=name, EventBusName=self.bus, Targets=[{"Id": "tap", "Arn": arn}])
        self.received: list[dict[str, Any]] = []

    def of(self, job_id: str) -> list[dict[str, Any]]:
        self._drain()
        return [event for event in self.received if event["detail"]["job_id"] == job_id]

    def statuses(self, job_id: str) -> list[str]:
        return [event["detail"]["status"] for event in sorted(self.of(job_id), key=_position)]

    def wait_for(self, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.of(job_id) if e["detail"]["status"] == status), None)

        return wait_until(found, timeout, message=f"a {status} event for {job_id}")

    def wait_for_any(self, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        """The job's first event with one of `statuses` (the test then asserts which one it was)."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.of(job_id) if e["detail"]["status"] in statuses), None)

        return wait_until(found, timeout, message=f"an event of {statuses} for {job_id}")

    def _drain(self) -> None:
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return
            for message in messages:
                self.received.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def close(self) -> None:
        self.events.remove_targets(Rule=self.rule, EventBusName=self.bus, Ids=["tap"])
        self.events.delete_rule(Name=self.rule, EventBusName=self.bus)
        self.sqs.delete_queue(QueueUrl=self.url)


def _position(event: dict[str, Any]) -> tuple[int, str]:
    """What a consumer orders a job's events by: the stream's sequence number."""
    sequence = event["detail"]["sequence"]
    return len(sequence), sequence


@pytest.fixture()
def tap(stack: Any, sim: Any) -> Iterator[EventTap]:
    settle_stack(stack, sim)
    events = EventTap(stack)
    yield events
    events.close()


def _mask_data_url() -> str:
    return "data:image/png;base64," + base64.b64encode(mask_png()).decode()


def _request(job_id: str, **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "parent_task_id": f"parent-{job_id}", "prompt": "a red kite", "mask": _mask_data_url()}


def _put_requested(stack: Any, detail: dict[str, Any]) -> None:
    answer = boto3.client("events").put_events(
        Entries=[
            {
                "Source": "test.client",
                "DetailType": REQUESTED,
                "Detail": json.dumps(detail),
                "EventBusName": stack.info.event_bus_name,
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0


def test_a_jobs_whole_life_arrives_as_events_with_the_documented_fields(stack, tap, s3, table, bucket):
    job_id = new_job_id("events-life")
    upload_job(s3, bucket, job_id, spec=json.dumps({"parent_task_id": "p-1", "metadata": {"order": 7}}).encode())

    completed = tap.wait_for(job_id, "COMPLETED")

    assert tap.statuses(job_id)[0] == "RECEIVED" and tap.statuses(job_id)[-1] == "COMPLETED"
    assert {"SUBMITTED", "PROCESSING"} <= set(tap.statuses(job_id))
    assert completed["source"] == "vary-region" and completed["detail-type"] == STATE_CHANGE
    detail = completed["detail"]
    assert set(detail) >= {"job_id", "status", "stage", "task_id", "percentage", "updated_at", "bucket", "metadata"}
    assert (detail["bucket"], detail["stage"], detail["metadata"]) == (bucket, "inpaint", {"order": 7})
    assert detail["task_id"] == wait_for_job(table, job_id)["task_id"]
    # COMPLETED comes after every result object is in S3.
    assert detail["results"]["result_json"] == f"results/{job_id}/result.json"
    stored = set(keys_under(s3, bucket, f"results/{job_id}/"))
    assert {detail["results"]["result_json"], *detail["results"]["images"].values()} <= stored
    sequences = sorted(_position(event) for event in tap.of(job_id))
    assert len(set(sequences)) == len(sequences), "each event has its own position: a stale one can be dropped"


def test_a_publisher_that_dies_before_it_publishes_loses_no_event(stack, tap, s3, bucket):
    job_id = new_job_id("events-crash")
    stack.stream_poller.fail_next_invocations = 3  # the function dies three times between write and publish
    upload_job(s3, bucket, job_id)

    tap.wait_for(job_id, "COMPLETED")

    assert {"RECEIVED", "SUBMITTED", "COMPLETED"} <= set(tap.statuses(job_id))
    assert len(stack.stream_poller.errors) >= 3


def test_a_rejected_upload_is_a_rejected_event_with_its_code(tap, s3, bucket):
    job_id = new_job_id("events-rejected")
    upload_job(s3, bucket, job_id, mask=mask_png(box=None))  # all black

    rejected = tap.wait_for(job_id, "REJECTED")

    assert rejected["detail"]["error"]["code"] == "MASK_BLANK"


def test_a_requested_event_runs_a_job_and_its_file_stays_in_the_inbox(stack, tap, sim, s3, table, bucket, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("requested")

    _put_requested(stack, _request(job_id))

    tap.wait_for(job_id, "COMPLETED")
    assert provider.inpaint_calls(job_id, status=200) == 1
    stored = json.loads(s3.get_object(Bucket=bucket, Key=f"inbox/{job_id}.json")["Body"].read())
    assert stored["parent_task_id"] == f"parent-{job_id}" and "job_id" not in stored


def test_the_same_body_sent_straight_to_the_submit_queue_runs_a_job(stack, tap, sim, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("queued-request")

    boto3.client("sqs").send_message(QueueUrl=stack.info.queue_url, MessageBody=json.dumps(_request(job_id)))

    tap.wait_for(job_id, "COMPLETED")
    assert provider.inpaint_calls(job_id, status=200) == 1


def test_duplicates_of_a_requested_event_make_one_paid_submission(stack, tap, sim, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("requested-dup")
    detail = _request(job_id)

    for _ in range(3):
        _put_requested(stack, detail)
    boto3.client("sqs").send_message(QueueUrl=stack.info.queue_url, MessageBody=json.dumps(detail))

    tap.wait_for(job_id, "COMPLETED")
    settle_stack(stack, stack.simulator)  # every delivery handled
    assert provider.inpaint_calls(job_id) == 1
    assert tap.statuses(job_id).count("COMPLETED") == 1


def test_a_bad_requested_event_yields_a_rejected_event_and_error_json(stack, tap, sim, s3, bucket, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("requested-bad")

    _put_requested(stack, {"job_id": job_id, "prompt": "no parent", "mask": _mask_data_url()})

    rejected = tap.wait_for(job_id, "REJECTED")
    assert rejected["detail"]["error"]["code"] == "PARENT_TASK_ID_MISSING"
    assert read_error_json(s3, bucket, job_id)["error"]["code"] == "PARENT_TASK_ID_MISSING"
    assert provider.inpaint_calls(job_id) == 0


def test_a_requested_job_may_name_its_mask_in_the_jobs_bucket(stack, tap, s3, bucket):
    job_id = new_job_id("requested-s3-mask")
    put_files(s3, bucket, [(f"inbox/masks/{job_id}.png", mask_png(), "image/png")])

    _put_requested(stack, _request(job_id) | {"mask": f"s3://{bucket}/inbox/masks/{job_id}.png"})

    tap.wait_for(job_id, "COMPLETED")


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        ("s3://another-bucket/inbox/m.png", "MASK_LOCATION_INVALID"),
        ("s3://{bucket}/results/m.png", "MASK_LOCATION_INVALID"),
        ("s3://{bucket}/inbox/masks/none.png", "MASK_MISSING"),
    ],
    ids=["another-bucket", "outside-the-inbox", "missing"],
)
def test_a_requested_mask_outside_the_jobs_inbox_is_rejected(stack, tap, s3, bucket, mask, code):
    job_id = new_job_id("requested-bad-mask")
    where = mask.format(bucket=bucket)
    if code == "MASK_LOCATION_INVALID":  # a real mask there: only the location rule can refuse it
        other_bucket, key = where.removeprefix("s3://").split("/", 1)
        if other_bucket != bucket:
            s3.create_bucket(Bucket=other_bucket)
        s3.put_object(Bucket=other_bucket, Key=key, Body=mask_png(), ContentType="image/png")

    _put_requested(stack, _request(job_id) | {"mask": where})

    ended = tap.wait_for_any(job_id, ("REJECTED", "FAILED", "COMPLETED"))["detail"]
    assert (ended["status"], (ended.get("error") or {}).get("code")) == ("REJECTED", code)


def test_a_request_never_overwrites_a_job_file_already_in_the_inbox(stack, tap, sim, s3, bucket, monkeypatch):
    """Two callers with one job id: the file first in the inbox is the job; the request changes nothing."""
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("requested-existing")
    first = _request(job_id) | {"prompt": "the first caller's prompt"}
    put_files(
        s3,
        bucket,
        [(f"inbox/{job_id}.json", json.dumps({k: v for k, v in first.items() if k != "job_id"}).encode(), None)],
    )
    tap.wait_for(job_id, "COMPLETED")

    _put_requested(stack, _request(job_id) | {"prompt": "a second caller's prompt"})
    settle_stack(stack, stack.simulator)

    stored = json.loads(s3.get_object(Bucket=bucket, Key=f"inbox/{job_id}.json")["Body"].read())
    assert stored["prompt"] == "the first caller's prompt"
    assert provider.inpaint_calls(job_id) == 1


def test_a_cancelled_transaction_neither_shows_in_the_stream_nor_stalls_it(stack, tap, s3, bucket):
    """moto puts a table snapshot back when a transaction is cancelled; the local stack keeps the
    stream out of it (moto_fixes.py), as DynamoDB's stream holds committed writes only."""
    from botocore.exceptions import ClientError

    phantom, table = new_job_id("phantom"), stack.info.table
    client = boto3.client("dynamodb")
    with pytest.raises(ClientError, match="TransactionCanceled"):
        client.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"job_id": {"S": phantom}},
                        "UpdateExpression": "SET #s = :s, updated_at = :t",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":s": {"S": "RECEIVED"}, ":t": {"S": "2026-12-01T00:00:00.000Z"}},
                    }
                },
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"job_id": {"S": f"{phantom}-other"}},
                        "UpdateExpression": "SET x = :x",
                        "ConditionExpression": "attribute_exists(job_id)",
                        "ExpressionAttributeValues": {":x": {"N": "1"}},
                    }
                },
            ]
        )
    job_id = new_job_id("after-the-cancelled")
    upload_job(s3, bucket, job_id)

    tap.wait_for(job_id, "COMPLETED")
    assert tap.of(phantom) == [], "a cancelled transaction's update is no event"


@pytest.mark.parametrize("job_id", ["a/b", "..", "x" * 201, "tab\there"], ids=["slash", "dots", "too-long", "tab"])
def test_a_request_whose_job_id_names_no_job_is_refused_once_not_retried(stack, tap, s3, bucket, caplog, job_id):
    settle_stack(stack, stack.simulator)
    caplog.set_level("INFO", logger="vary-region")

    message_id = _send_to_queue(stack, json.dumps(_request(job_id)))

    def said(message: str) -> bool:
        return any(record.getMessage() == message for record in caplog.records)

    answer = wait_until(lambda: _endings(caplog, message_id), 20, message="the submit function handled the request")
    assert answer == {message_id: "job request refused"}, "refused, not failed: the message is not delivered again"
    settle_stack(stack, stack.simulator)
    assert not said("queue message failed"), "refused, not failed: the message is not delivered again"
    # Exactly the key it would have written: other tests leave keys such as inbox/a/b/c.json behind.
    assert f"inbox/{job_id}.json" not in keys_under(s3, bucket, "inbox/")


def _send_to_queue(stack: Any, body: str) -> str:
    """Sends `body` to the submit queue; its message id (what the submit function logs it by)."""
    return str(boto3.client("sqs").send_message(QueueUrl=stack.info.queue_url, MessageBody=body)["MessageId"])


def _endings(caplog: Any, *message_ids: str) -> dict[str, str]:
    """How the submit function ended these messages, those it ended with a log line: refused
    (nothing names a job) or failed (the message comes back)."""
    endings = ("job request refused", "queue message failed")
    return {
        record.message_id: record.getMessage()
        for record in list(caplog.records)
        if getattr(record, "message_id", None) in message_ids and record.getMessage() in endings
    }


def test_a_requested_job_with_nan_is_rejected_at_once_and_no_file_of_it_is_written(
    stack, tap, sim, s3, table, bucket, caplog, monkeypatch
):
    """EventBridge refuses such a detail itself; a plain queue body carries it to the submit function."""
    provider = ProviderRecorder.install(sim, monkeypatch)
    caplog.set_level("INFO", logger="vary-region")
    job_id = new_job_id("requested-nan")

    body = json.dumps(_request(job_id))[:-1] + ', "metadata": {"score": NaN}}'
    sent = (_send_to_queue(stack, body), _send_to_queue(stack, body))  # delivered twice, as SQS may

    # Handled: the job has its final item, or the function ended both messages without writing one.
    wait_until(
        lambda: (get_job(table, job_id) or {}).get("status") in FINAL_STATUSES or len(_endings(caplog, *sent)) == 2,
        20,
        message="the submit function handled the request",
    )
    assert (get_job(table, job_id) or {}).get("error", {}).get("code") == "SPEC_INVALID_JSON", (
        f"the request was not rejected at once: {_endings(caplog, *sent) or get_job(table, job_id)}"
    )
    rejected = tap.wait_for(job_id, "REJECTED")
    assert rejected["detail"]["error"]["code"] == "SPEC_INVALID_JSON"
    assert "NaN" in rejected["detail"]["error"]["message"]
    assert wait_for_job(table, job_id)["error"]["code"] == "SPEC_INVALID_JSON"
    assert read_error_json(s3, bucket, job_id)["error"]["code"] == "SPEC_INVALID_JSON"
    settle_stack(stack, sim)
    assert keys_under(s3, bucket, f"inbox/{job_id}") == [], "never written with NaN in it"
    assert provider.inpaint_calls(job_id) == 0
    assert not any(r.getMessage() == "queue message failed" for r in caplog.records), "handled once, not retried"
    assert tap.statuses(job_id).count("REJECTED") == 1, "the second delivery changed nothing"
    assert job_item(table, job_id)["updated_at"] == rejected["detail"]["updated_at"]


def test_a_deeply_nested_queue_body_is_refused_once_not_retried(stack, s3, bucket, caplog):
    settle_stack(stack, stack.simulator)
    caplog.set_level("INFO", logger="vary-region")
    job_id = new_job_id("requested-deep")

    _send_to_queue(stack, json.dumps(_request(job_id))[:-1] + ', "metadata": ' + "[" * 50_000 + "]" * 50_000 + "}")

    def refused() -> bool:
        return any(
            r.getMessage() == "job request refused" and "levels deep" in getattr(r, "reason", "")
            for r in caplog.records
        )

    wait_until(refused, 20, message="the body refused")
    settle_stack(stack, stack.simulator)
    assert not any(r.getMessage() == "queue message failed" for r in caplog.records)
    assert keys_under(s3, bucket, f"inbox/{job_id}") == []


def test_a_requested_job_with_a_misspelt_key_is_rejected_with_the_near_miss(stack, tap, sim, s3, bucket, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("requested-typo")
    request = _request(job_id)
    request["promt"] = request.pop("prompt")

    _put_requested(stack, request)

    error = tap.wait_for(job_id, "REJECTED")["detail"]["error"]
    assert error["code"] == "SPEC_UNKNOWN_KEY" and "did you mean 'prompt'?" in error["message"]
    assert read_error_json(s3, bucket, job_id)["error"] == error
    assert provider.inpaint_calls(job_id) == 0
