"""A job's state change, read from the job table's stream and told as an EventBridge event.

Published from the stream, not by the handlers after their writes: a function that dies between its
state write and a publish would lose the event; the stream keeps every write for 24 hours and Lambda
retries it until it is published. One event per change of `status` or of `stage` (progress alone is
no event). Delivery is at least once and in no guaranteed order: `sequence` (the stream's sequence
number, which grows with every write of the item) and `updated_at` let a consumer drop a stale one.
A COMPLETED event can only follow the COMPLETED write, which comes after every result object is in S3.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from vary_region.core.event_types import SOURCE, STATE_CHANGE
from vary_region.core.strict_json import read_stored

# EventBridge's limit for one entry (Source, DetailType, Detail, Resources and Time together).
MAX_ENTRY_BYTES = 256 * 1024
_FINAL = ("COMPLETED", "FAILED", "REJECTED")


class StateChange(NamedTuple):
    """One event to put: the job it is about, its position in the stream, and its detail."""

    job_id: str
    sequence: str
    detail: dict[str, Any]

    def entry(self, bus_name: str) -> dict[str, Any]:
        detail = json.dumps(self.detail, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if _entry_bytes(detail) > MAX_ENTRY_BYTES:
            # Large metadata is referenced, not inlined: result.json (and the item) keep all of it.
            slim = dict(self.detail, metadata=None, metadata_truncated=True)
            detail = json.dumps(slim, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return {
            "Source": SOURCE,
            "DetailType": STATE_CHANGE,
            "Detail": detail,
            "EventBusName": bus_name,
            "Resources": [],
        }


def state_change(record: dict[str, Any], bucket: str) -> StateChange | None:
    """The event one stream record calls for, or None: not a job's item (the slot counter, the credit
    ledger), a removal (TTL), or a write that changed neither `status` nor `stage`."""
    images = job_images(record)
    if images is None or not _transition(images.old, images.new):
        return None
    return StateChange(images.job_id, images.sequence, _detail(images.new, images.old, bucket, images.sequence))


class JobImages(NamedTuple):
    """A job item's write as the stream tells it: the item before and after, and the write's place."""

    job_id: str
    sequence: str
    old: dict[str, Any]
    new: dict[str, Any]


def job_images(record: dict[str, Any]) -> JobImages | None:
    """A stream record's job item before and after, or None: not a job's item (the slot counter, the
    credit ledger), a removal (TTL)."""
    from boto3.dynamodb.types import TypeDeserializer

    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    change = record.get("dynamodb") or {}
    deserializer = TypeDeserializer()
    new = {k: deserializer.deserialize(v) for k, v in (change.get("NewImage") or {}).items()}
    old = {k: deserializer.deserialize(v) for k, v in (change.get("OldImage") or {}).items()}
    job_id = new.get("job_id")
    if not isinstance(job_id, str) or job_id.startswith("/") or "status" not in new:
        return None  # not a job, or (moto) the key-only first half of the item's creation
    return JobImages(job_id, str(change.get("SequenceNumber", "")), old, new)


def _transition(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """A new status; a chain moving on to its next stage (the first claim only names the first stage:
    no event); or a job newly held back, or held for another reason (`held_reason`)."""
    if old.get("status") != new["status"]:
        return True
    if old.get("stage") is not None and old.get("stage") != new.get("stage"):
        return True
    held = new["status"] == "RECEIVED" and new.get("held_at") is not None
    return held and (old.get("held_at") is None or old.get("held_reason") != new.get("held_reason"))


def _detail(item: dict[str, Any], old: dict[str, Any], bucket: str, sequence: str) -> dict[str, Any]:
    status = str(item["status"])
    detail: dict[str, Any] = {
        "job_id": item["job_id"],
        "status": status,
        "previous_status": old.get("status"),
        "stage": item.get("stage"),  # none until the first claim (a plain job's is "inpaint")
        "task_id": item.get("task_id"),
        "percentage": number(item.get("percentage")),
        "updated_at": item.get("updated_at"),
        "sequence": sequence,
        "bucket": bucket,
        "metadata": metadata(item.get("metadata_json")),
    }
    if item.get("held_reason") and status == "RECEIVED" and item.get("held_at"):
        detail["held_reason"] = item["held_reason"]
        if item.get("held_until"):  # the budget's next period, or about when it is tried again
            detail["held_until"] = item["held_until"]
    error = item.get("error")
    if status in ("FAILED", "REJECTED") and isinstance(error, dict):
        detail["error"] = {"code": error.get("code"), "message": error.get("message"), "stage": error.get("stage")}
    result = item.get("result")
    if status == "COMPLETED" and isinstance(result, dict):
        detail["results"] = {"result_json": result.get("result_json"), "images": result.get("images") or {}}
    if status in _FINAL and item.get("credits_reserved") is not None:
        detail["credits"] = {
            "reserved": numbers(item.get("credits_reserved")),
            "spent": numbers(item.get("credits_spent")),
        }
    return detail


def metadata(raw: Any) -> Any:
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        return read_stored(raw)  # an item from before NaN was refused: its event is still valid JSON
    except ValueError:
        return {}


def number(value: Any) -> int | float | None:
    if value is None:
        return None
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


def numbers(value: Any) -> dict[str, Any]:
    return {str(k): number(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _entry_bytes(detail: str) -> int:
    """The size EventBridge counts for an entry (its documented calculation, Time included)."""
    return len(SOURCE.encode()) + len(STATE_CHANGE.encode()) + len(detail.encode("utf-8")) + 14
