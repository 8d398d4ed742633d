"""A job's state as the pipeline records it (one DynamoDB item per job)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from vary_region.errors import JobError


class JobStatus(StrEnum):
    RECEIVED = "RECEIVED"
    SUBMITTED = "SUBMITTED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.REJECTED)


@dataclass(frozen=True)
class Job:
    """One job's item in the task table: its state, its task and its timings."""

    job_id: str
    status: JobStatus
    created_at: str
    updated_at: str
    task_id: str | None = None
    percentage: int | None = None
    parent_task_id: str | None = None
    prompt: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook_secret_hash: str | None = field(default=None, repr=False)
    submit_claim: str | None = None
    submit_claimed_at: str | None = None
    submitted_at: str | None = None
    completed_at: str | None = None
    needs_attention: bool = False
    held_at: str | None = None
    copy_failures: int = 0
    error: JobError | None = None
    result: dict[str, Any] | None = None

    @property
    def was_submitted(self) -> bool:
        """True once a paid submission may exist: from the claim on, never submit again."""
        return self.submit_claim is not None


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds: sorts as text, so it can be an index sort key."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
