"""The answer a job's write owes the Step Functions task waiting for it (the job's `task_token`).

Decided from the table's stream, as the state-change events are, so an answer is as durable as the
write that calls for it: a publisher that dies before answering gets the record back.

- The write that made the job COMPLETED: SendTaskSuccess, with what a workflow needs next (the
  result keys, the tasks and their credits, the metadata), never the token.
- The write that made it REJECTED or FAILED: SendTaskFailure, `error` = the job's code, `cause` =
  its message, so a workflow's Catch can match the code.
- Any other write (a claim, a task accepted, a percentage): SendTaskHeartbeat, at most once per
  minute of the clock, so HeartbeatSeconds on the caller's task notices a job that stopped moving.

The heartbeat's bound is read from the record alone: a heartbeat is due when this write's
`updated_at` falls in another UTC minute than the write before it (the record's old image). No
last-heartbeat attribute is written back: that write would be one more stream record per
heartbeat, a table permission for the publisher, and one more write to fail; and a redelivered
record decides the same way (a second heartbeat is harmless). Writes in one minute share a
heartbeat; a job that makes no write for a while sends none, which is what HeartbeatSeconds is for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vary_region.core.stages import CHAIN
from vary_region.publisher.state_change import JobImages, job_images, metadata, number

# SendTaskFailure's limits: `error` at most 256 characters, `cause` at most 32768.
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32768
TOKEN_ATTRIBUTE = "task_token"  # noqa: S105 - the attribute's name, not a token
_FAILED = ("FAILED", "REJECTED")
_FINAL = ("COMPLETED", *_FAILED)


class AnswerKind(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True)
class TaskAnswer:
    """One call owed to a waiting task. The token stays out of repr (and so out of any log line)."""

    job_id: str
    sequence: str
    kind: AnswerKind
    token: str = field(repr=False)
    output: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None


def task_answer(record: dict[str, Any], bucket: str) -> TaskAnswer | None:
    """What one stream record owes the job's waiting task, or None (no token; nothing due)."""
    images = job_images(record)
    if images is None:
        return None
    token = images.new.get(TOKEN_ATTRIBUTE)
    if not isinstance(token, str) or not token:
        return None
    status = str(images.new["status"])
    if status in _FINAL:
        if images.old.get("status") == status:
            return None  # a write after the end (a document, a setting): answered once, when it ended
        if status == "COMPLETED":
            return TaskAnswer(images.job_id, images.sequence, AnswerKind.SUCCESS, token, output=_output(images, bucket))
        error = _mapping(images.new.get("error"))
        return TaskAnswer(
            images.job_id,
            images.sequence,
            AnswerKind.FAILURE,
            token,
            error=str(error.get("code") or status)[:MAX_ERROR_CHARS],
            cause=str(error.get("message") or f"the job is {status}")[:MAX_CAUSE_CHARS],
        )
    if not _heartbeat_due(images):
        return None
    return TaskAnswer(images.job_id, images.sequence, AnswerKind.HEARTBEAT, token)


def _heartbeat_due(images: JobImages) -> bool:
    """The first write in a new minute of the clock (an ISO timestamp's first 16 characters)."""
    before, now = images.old.get("updated_at"), images.new.get("updated_at")
    if not isinstance(now, str):
        return False
    return not isinstance(before, str) or before[:16] != now[:16]


def _output(images: JobImages, bucket: str) -> dict[str, Any]:
    """SendTaskSuccess's output: the job's results as the COMPLETED event tells them, and its tasks."""
    item = images.new
    result, reserved = _mapping(item.get("result")), _mapping(item.get("credits_reserved"))
    tasks = [
        {"stage": str(stage), "task_id": item[stage.task_id_attribute], "credits": number(reserved.get(str(stage)))}
        for stage in CHAIN
        if item.get(stage.task_id_attribute)
    ]
    return {
        "job_id": images.job_id,
        "status": "COMPLETED",
        "bucket": bucket,
        "results": {"result_json": result.get("result_json"), "images": result.get("images") or {}},
        "tasks": tasks,
        "metadata": metadata(item.get("metadata_json")),
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
