"""What handling one upload (or one requested job) did to its job: shared by the submitter and the
parts it delegates to, and counted by the submit function's handler."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vary_region.core.errors import JobError


class SubmitOutcome(StrEnum):
    IGNORED = "ignored"  # not a job file
    WAITING = "waiting_for_files"  # the other half of the job has not arrived yet
    ALREADY_HANDLED = "already_handled"  # a redelivery, or the other file's event won the claim
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    HELD = "held"  # valid, but it must wait (no provider slot, parent still running): back through the queue
    DEFERRED = "deferred"  # too little time left in the invocation for a paid call: back through the queue, untouched


@dataclass(frozen=True)
class SubmitResult:
    """What handling one upload did to its job."""

    outcome: SubmitOutcome
    job_id: str | None = None
    task_id: str | None = None
    error: JobError | None = None
    first_seen: bool = False  # this upload was the first sign of the job
