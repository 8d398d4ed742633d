"""Given the publisher against moto's EventBridge (a bus of the test's own, delivering to a queue), when
PutEvents takes only part of a batch (FailedEntryCount, as EventBridge does under throttling), then
the entries it did not take are put again, batches stay at ten entries, and records that could not be
put at all are reported to the stream by sequence number, so none is dropped."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from vary_region.publisher.publisher import EventPublisher, StateChangePublisher
from vary_region.publisher.state_change import StateChange

from tests.support.waits import wait_until

pytestmark = pytest.mark.generation_blind


class PartlyFailing:
    """EventBridge, except that the entries `refuse` picks are not put and come back as failed
    (ErrorCode ThrottlingException), as a real PutEvents answer reports them."""

    def __init__(self, real: Any, refuse: Any) -> None:
        self.real = real
        self.refuse = refuse
        self.calls: list[int] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(len(Entries))
        refused = [self.refuse(json.loads(entry["Detail"])) for entry in Entries]
        taken = [entry for entry, no in zip(Entries, refused, strict=True) if not no]
        answer = self.real.put_events(Entries=taken) if taken else {"Entries": []}
        results = iter(answer["Entries"])
        entries = [
            {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"} if no else next(results)
            for no in refused
        ]
        return {"FailedEntryCount": sum(refused), "Entries": entries}


@pytest.fixture()
def bus(stack: Any) -> Iterator[tuple[str, str]]:
    """A bus of the test's own and a queue that receives everything put on it."""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    name = f"bus-{uuid.uuid4().hex[:8]}"
    events.create_event_bus(Name=name)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventBusName=name, EventPattern=json.dumps({"source": ["vary-region"]}))
    events.put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])
    yield name, url
    events.remove_targets(Rule=name, EventBusName=name, Ids=["q"])
    events.delete_rule(Name=name, EventBusName=name)
    events.delete_event_bus(Name=name)
    sqs.delete_queue(QueueUrl=url)


def _received(url: str, expected: int) -> list[dict[str, Any]]:
    sqs, got = boto3.client("sqs"), []

    def drained() -> bool:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            got.append(json.loads(message["Body"])["detail"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= expected

    wait_until(drained, 20, message=f"{expected} events on the queue")
    return got


def _changes(count: int) -> list[StateChange]:
    return [StateChange(f"job-{n}", str(1000 + n), {"job_id": f"job-{n}", "status": "RECEIVED"}) for n in range(count)]


def test_entries_a_put_did_not_take_are_put_again_ten_at_a_time(bus):
    name, url = bus
    first_try: set[str] = set()

    def refuse_once(detail: dict[str, Any]) -> bool:  # every third entry is throttled on its first try
        job = detail["job_id"]
        if int(job.split("-")[1]) % 3 or job in first_try:
            return False
        first_try.add(job)
        return True

    events = PartlyFailing(boto3.client("events"), refuse_once)
    publisher = EventPublisher(events, name, sleep=lambda _: None)

    left = publisher.publish(_changes(25))

    assert left == []
    # The puts are over when publish returns: what was put again is known before any event is read.
    assert max(events.calls) <= 10 and events.calls[:3] == [10, 10, 5]
    assert sum(events.calls) == 25 + 9, "only the nine refused entries were put again"
    assert sorted(detail["job_id"] for detail in _received(url, 25)) == sorted(f"job-{n}" for n in range(25))


def test_records_that_could_not_be_put_are_given_back_to_the_stream(bus):
    name, url = bus
    events = PartlyFailing(boto3.client("events"), lambda detail: detail["job_id"] == "job-2")
    publisher = StateChangePublisher(EventPublisher(events, name, attempts=3, sleep=lambda _: None), "bucket")
    records = [_record(f"job-{n}", str(1000 + n)) for n in range(4)]

    answer = publisher.handle_stream_batch(records)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "1002"}]}
    assert sorted(detail["job_id"] for detail in _received(url, 3)) == ["job-0", "job-1", "job-3"]


def _record(job_id: str, sequence: str) -> dict[str, Any]:
    return {
        "eventName": "INSERT",
        "dynamodb": {
            "SequenceNumber": sequence,
            "NewImage": {
                "job_id": {"S": job_id},
                "status": {"S": "RECEIVED"},
                "updated_at": {"S": "2026-12-01T00:00:00.000Z"},
            },
        },
    }
