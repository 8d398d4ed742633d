"""`vary-region watch --events`: follow a job by its state-change events instead of polling its item.

The CLI subscribes a queue of its own to the bus with a rule for this one job, reads the events as
they come (keeping, per job, the one with the highest stream `sequence`: delivery is at least once
and unordered), and removes the rule and the queue when it is done. The item is still read once at
the start (the job may be over already) and every `check_every` seconds as a safety net, so a
watch never waits for an event that was put before the rule existed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from vary_region.core.event_types import SOURCE, STATE_CHANGE

from vary_region_cli.config import CliError, Target


def event_bus(target: Target, given: str | None) -> str:
    bus = given or target.stack_info.get("event_bus_name") or target.stack_info.get("EventBusName")
    if not bus:
        target.require_table()  # a deployed stack's outputs name the bus
        bus = target.stack_info.get("EventBusName")
    if not bus:
        raise CliError("no event bus known: pass --event-bus NAME (the stack's EventBusName output)")
    return str(bus)


class JobEvents:
    """A rule for one job's state changes (`job_id`), or for every job's (None: the deploy
    rehearsal's), delivering to a queue of its own; `close` removes both."""

    def __init__(self, target: Target, job_id: str | None, bus: str) -> None:
        self._sqs = target.client("sqs")
        self._events = target.client("events")
        self._bus = bus
        self.name = f"vary-region-watch-{uuid.uuid4().hex[:10]}"
        # A day's retention: a queue left behind by a watch that was killed holds nothing for long.
        self._queue_url = self._sqs.create_queue(QueueName=self.name, Attributes={"MessageRetentionPeriod": "86400"})[
            "QueueUrl"
        ]
        try:
            self._subscribe(job_id, bus)
        except BaseException:
            self.close()  # a refused rule (no such bus, no permission) leaves nothing behind
            raise

    def _subscribe(self, job_id: str | None, bus: str) -> None:
        queue_arn = self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        pattern: dict[str, Any] = {"source": [SOURCE], "detail-type": [STATE_CHANGE]}
        if job_id is not None:
            pattern["detail"] = {"job_id": [job_id]}
        rule_arn = self._events.put_rule(
            Name=self.name, EventBusName=bus, EventPattern=json.dumps(pattern, allow_nan=False)
        )["RuleArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                }
            ],
        }
        self._sqs.set_queue_attributes(
            QueueUrl=self._queue_url, Attributes={"Policy": json.dumps(policy, allow_nan=False)}
        )
        self._events.put_targets(Rule=self.name, EventBusName=bus, Targets=[{"Id": "watch", "Arn": queue_arn}])

    def wait(self, seconds: float) -> Iterator[dict[str, Any]]:
        """The events' details that arrive within `seconds` (one long poll, at most 20 s)."""
        answer = self._sqs.receive_message(
            QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=max(1, min(20, round(seconds)))
        )
        for message in answer.get("Messages", []):
            self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
            try:
                event = json.loads(message["Body"])
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("detail"), dict):
                yield event["detail"]

    def close(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._events.remove_targets(Rule=self.name, EventBusName=self._bus, Ids=["watch"])
            self._events.delete_rule(Name=self.name, EventBusName=self._bus)
        except ClientError:
            pass  # never made (a failed subscription), or gone already
        finally:
            self._sqs.delete_queue(QueueUrl=self._queue_url)


def newer(detail: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Is this event about a later state of the job than the one shown (by stream sequence)?"""
    if than is None:
        return True
    mine, theirs = str(detail.get("sequence") or ""), str(than.get("sequence") or "")
    return (len(mine), mine) > (len(theirs), theirs)
