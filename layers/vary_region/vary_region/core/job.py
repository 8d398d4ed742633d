"""A job's state as the pipeline records it (one DynamoDB item per job)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from vary_region.core.errors import JobError
from vary_region.core.stages import JobStage

if TYPE_CHECKING:
    from vary_region.core.credits import CreditReservation


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
    held_at: str | None = None  # since when the job has been held back (its first hold; gone once claimed)
    stage_opened_at: str | None = None  # when a chain moved on to its open stage (not set on a first stage)
    copy_failures: int = 0
    error: JobError | None = None
    result: dict[str, Any] | None = None
    stage: JobStage = JobStage.INPAINT  # the open stage; jobs made before chains are inpaint jobs
    claim_stage: JobStage | None = None  # the stage `submit_claim` belongs to
    stage_task_ids: dict[JobStage, str] = field(default_factory=dict)
    stage_secret_hashes: dict[JobStage, str] = field(default_factory=dict, repr=False)
    inbox_key: str | None = None  # the upload that claimed the first stage: later stages start from it
    parent_image_url: str | None = None  # the inpaint's parent image, copied beside the results
    mask_key: str | None = None  # the mask as sent, stored before the inpaint was claimed
    held_reason: str | None = None
    held_until: str | None = None  # a held job: when it goes again (the budget's next period) or is next tried
    reservation: CreditReservation | None = None  # the chain's credits, set aside at the first claim
    credits_needed: int | None = None  # a job held for budget: what its chain costs

    @property
    def was_submitted(self) -> bool:
        """True once a paid submission may exist for this job (any stage): from the first claim on."""
        return self.submit_claim is not None

    @property
    def stage_claimed(self) -> bool:
        """The open stage has its claim: its task is paid for (or may be), never submit it again."""
        return self.submit_claim is not None and self.claim_stage is self.stage

    def task_id_of(self, stage: JobStage) -> str | None:
        return self.task_id if stage is self.stage and self.task_id else self.stage_task_ids.get(stage)


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds: sorts as text, so it can be an index sort key."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
