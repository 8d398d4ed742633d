"""The doctor's probe job: one inline job file whose mask is deliberately not an image, dropped into
inbox/. The submit function must reject it (REJECTED, with results/<id>/error.json) before anything
is sent to APIFRAME, which proves the bucket's notification, the submit queue, the function and its
permissions; the publisher must put its state change on the bus, which a temporary rule and queue
of the doctor's own catch. Then every trace of the probe goes: its objects (every version), its item,
the rule and the queue."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from vary_region_cli.config import Target
from vary_region_cli.doctor import Check, Outcome, StackFacts, extra
from vary_region_cli.jobs import INBOX, RESULTS, get_item

PROBE_PREFIX = "doctor-probe-"
NOT_AN_IMAGE = b"vary-region doctor probe: deliberately not an image\n"
POLL_SECONDS = 0.5


def probe_job_id(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{PROBE_PREFIX}{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def probe_document(job_id: str) -> dict[str, Any]:
    """A whole job in one file; its mask's bytes are no image, so it is refused as it is read."""
    return {
        "parent_task_id": "doctor-probe-parent",
        "prompt": "vary-region doctor probe",
        "mask": "data:image/png;base64," + base64.b64encode(NOT_AN_IMAGE).decode("ascii"),
        "metadata": {"doctor_probe": job_id},
    }


class Probe:
    def __init__(
        self, target: Target, facts: StackFacts, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._target = target
        self._facts = facts
        self._timeout = timeout
        self._clock = clock
        self.job_id = probe_job_id()
        self._key = f"{INBOX}{self.job_id}.json"
        self._started = clock()

    def run(self) -> Iterator[Check]:
        """The probe's checks in order: the rejection, the event, the clean-up."""
        events, subscribe_error = self._subscribe()
        try:
            rejection, final = self._drop_and_follow()
            yield rejection
            yield self._event_check(events, subscribe_error, final)
        finally:
            if events is not None:
                events.close()
        yield self._clean_up()

    # --- the job ----------------------------------------------------------------------------------

    def _drop_and_follow(self) -> tuple[Check, bool]:
        """(the check, whether the probe reached a final state)"""
        name, facts = "probe job", self._facts
        from botocore.exceptions import BotoCoreError, ClientError

        body = (json.dumps(probe_document(self.job_id), allow_nan=False) + "\n").encode()
        try:
            self._target.s3.put_object(Bucket=facts.bucket, Key=self._key, Body=body, ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            return Check(
                name,
                Outcome.FAIL,
                f"the probe could not be uploaded to s3://{facts.bucket}/{self._key}: {extra(exc)}",
                "your credentials need s3:PutObject on the jobs bucket's inbox/",
            ), False
        self._started = self._clock()
        item = self._wait(lambda: self._final_item())
        logs = f"see {facts.log_group('submit')}"
        if item is None:
            seen = get_item(self._target, self.job_id)
            state = f"it is still {seen.get('status')}" if seen else "no item was written"
            cause, fix = self._why_not_handled() if seen is None else ("the submit function did not finish it", logs)
            return Check(
                name,
                Outcome.FAIL,
                f"the probe s3://{facts.bucket}/{self._key} was not handled within {self._timeout:.0f}s "
                f"({state}): {cause}",
                fix,
            ), seen is not None
        status, error = item.get("status"), item.get("error") or {}
        if status != "REJECTED":
            return Check(
                name,
                Outcome.FAIL,
                f"the probe (a mask that is no image) ended {status}, not REJECTED: {extra(error)}",
                logs,
            ), True
        error_key = f"{RESULTS}{self.job_id}/error.json"
        document = self._wait(lambda: self._error_document(error_key))
        if document is None:
            return Check(
                name,
                Outcome.FAIL,
                f"the probe was REJECTED ({error.get('code')}) but s3://{facts.bucket}/{error_key} was not written",
                f"the submit function needs s3:PutObject on results/; {logs}",
            ), True
        return Check(
            name,
            Outcome.PASS,
            f"a mask that is no image went inbox/ -> submit function -> REJECTED ({error.get('code')}) "
            f"+ error.json in {self._clock() - self._started:.1f}s, nothing sent to APIFRAME",
        ), True

    def _why_not_handled(self) -> tuple[str, str]:
        """The likeliest broken link when the probe made no item: (cause, fix)."""
        from botocore.exceptions import BotoCoreError, ClientError

        s3, logs = self._target.s3, self._facts.log_group("submit")
        try:
            rules = s3.get_bucket_notification_configuration(Bucket=self._facts.bucket).get("QueueConfigurations", [])
        except (ClientError, BotoCoreError):
            rules = None
        if rules is not None and not any(_notifies_inbox(rule) for rule in rules):
            return (
                "the bucket sends no notification of new inbox/ objects to a queue",
                "deploy again (sam deploy) to restore the bucket's notification to the submit queue",
            )
        waiting = self._queue_depth()
        if waiting:
            return (
                f"the submit queue holds {waiting} message(s) the submit function does not take",
                f"check the submit function's SQS event source mapping (enabled?) and {logs}",
            )
        return (
            "the submit queue or the submit function is broken",
            f"see {logs} and the submit queue's dead-letter queue (DeadLetterQueueUrl)",
        )

    def _queue_depth(self) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self._facts.submit_queue_url:
            return 0
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        try:
            attributes = self._target.client("sqs").get_queue_attributes(
                QueueUrl=self._facts.submit_queue_url, AttributeNames=names
            )["Attributes"]
        except (ClientError, BotoCoreError):
            return 0
        return sum(int(attributes.get(name, 0)) for name in names)

    def _final_item(self) -> dict[str, Any] | None:
        item = get_item(self._target, self.job_id)
        return item if item is not None and item.get("status") in ("REJECTED", "FAILED", "COMPLETED") else None

    def _error_document(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            body = self._target.s3.get_object(Bucket=self._facts.bucket, Key=key)["Body"].read()
        except ClientError:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}

    def _wait(self, read: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        while True:
            found = read()
            if found is not None or self._clock() - self._started >= self._timeout:
                return found
            time.sleep(POLL_SECONDS)

    # --- the event --------------------------------------------------------------------------------

    def _subscribe(self) -> tuple[Any, str]:
        """A rule for this job's state changes and a queue it delivers to, before the probe is dropped."""
        from botocore.exceptions import BotoCoreError, ClientError

        from vary_region_cli.events import JobEvents

        try:
            return JobEvents(self._target, self.job_id, self._facts.event_bus), ""
        except (ClientError, BotoCoreError) as exc:
            return None, extra(exc)

    def _event_check(self, events: Any, subscribe_error: str, final: bool) -> Check:
        name, bus = "state-change event", self._facts.event_bus
        if events is None:
            return Check(
                name,
                Outcome.FAIL,
                f"no temporary rule and queue could be made on bus {bus}: {subscribe_error}",
                "your credentials need events:PutRule/PutTargets/RemoveTargets/DeleteRule and "
                "sqs:CreateQueue/SetQueueAttributes/DeleteQueue",
            )
        if not final:
            return Check(name, Outcome.SKIP, "the probe never changed state, so no event was due")
        # The probe is final: its event follows within seconds (the stream, then the publisher).
        deadline = self._clock() + max(10.0, self._timeout - (self._clock() - self._started))
        while self._clock() < deadline:
            for detail in events.wait(min(5.0, max(1.0, deadline - self._clock()))):
                if detail.get("job_id") == self.job_id and detail.get("status") in ("REJECTED", "FAILED"):
                    return Check(name, Outcome.PASS, f"the probe's {detail.get('status')} event reached bus {bus}")
        return Check(
            name,
            Outcome.FAIL,
            f"no state-change event for the probe reached bus {bus}: the table's stream, the publisher "
            "or its events:PutEvents permission is broken",
            f"see {self._facts.log_group('publisher')} and the PublisherFailureQueueUrl queue",
        )

    # --- the clean-up -----------------------------------------------------------------------------

    def _clean_up(self) -> Check:
        name, bucket = "clean-up", self._facts.bucket
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            left = self._delete_objects(self._key) + self._delete_objects(f"{RESULTS}{self.job_id}/")
            self._target.dynamodb.delete_item(TableName=self._facts.table, Key={"job_id": {"S": self.job_id}})
        except (ClientError, BotoCoreError) as exc:
            return Check(
                name,
                Outcome.WARN,
                f"the probe {self.job_id} could not be removed: {extra(exc)}",
                f"delete s3://{bucket}/{INBOX}{self.job_id}.json, s3://{bucket}/{RESULTS}{self.job_id}/ "
                f"and the item {self.job_id} yourself",
            )
        if left:
            return Check(name, Outcome.WARN, f"left behind: {', '.join(left)}", "delete them yourself")
        return Check(name, Outcome.PASS, f"the probe {self.job_id} is gone (objects, every version, and item)")

    def _delete_objects(self, prefix: str) -> list[str]:
        """Every version and delete marker under `prefix` (the bucket is versioned); the keys not deleted."""
        s3, bucket = self._target.s3, self._facts.bucket
        listed = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
        ]
        if not doomed:
            return []
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
        return [str(error.get("Key")) for error in answer.get("Errors", [])]


def _notifies_inbox(rule: dict[str, Any]) -> bool:
    """Whether a bucket's queue notification covers new objects under inbox/."""
    if not any(str(event).startswith("s3:ObjectCreated:") for event in rule.get("Events", [])):
        return False
    filters = ((rule.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []
    prefix = next((str(f.get("Value", "")) for f in filters if str(f.get("Name", "")).lower() == "prefix"), "")
    return INBOX.startswith(prefix)
