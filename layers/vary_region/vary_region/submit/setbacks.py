"""A job its checks stop before its claim (or its claim's budget stops): it waits for a file or for its
parent, or ends: REJECTED while nothing was paid, FAILED when a chain under way has paid stages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vary_region.core.credits import OverBudget, OverBudgetAction
from vary_region.core.errors import ErrorStage, JobError, ProviderUnavailable
from vary_region.core.job import Job
from vary_region.core.keys import InboxObject
from vary_region.endings import JobEndings
from vary_region.observability import logger
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.submit.holds import HeldReason, Holder, HoldPolicy
from vary_region.submit.inputs import WaitingForFiles
from vary_region.submit.outcome import SubmitOutcome, SubmitResult
from vary_region.submit.parent import ParentNotReady


class Setbacks:
    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        ends: JobEndings,
        holds: HoldPolicy,
        holder: Holder | None,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._ends = ends
        self._holds = holds
        self._holder = holder  # None without a submit queue (a direct S3 trigger): AWS retries instead
        self._clock = clock

    def files_missing(self, job_id: str, waiting: WaitingForFiles, existing: Job | None) -> SubmitResult:
        if existing is not None and existing.was_submitted:
            # A chain under way whose files left the inbox cannot go on: nothing would ever come back.
            message = f"the chain's next stage cannot start: {waiting}"
            return self.fail_later_stage(existing, JobError("JOB_FILES_MISSING", message, ErrorStage.INTAKE))
        # Said on the item, so every view of the job (the CLI, the console) tells what it waits for.
        self._store.record_waiting_for(job_id, waiting.what, self._clock())
        return SubmitResult(SubmitOutcome.WAITING, job_id)

    def refused(self, job_id: str, error: JobError, existing: Job | None) -> SubmitResult:
        if existing is not None and existing.was_submitted:
            return self.fail_later_stage(existing, error)
        return self.reject(job_id, error)

    def parent_not_ready(self, uploaded: InboxObject, waiting: ParentNotReady, job: Job | None) -> SubmitResult:
        if self._holder is None:  # no queue to hold it in (a direct S3 trigger): let AWS retry the event
            raise ProviderUnavailable(str(waiting))
        stage = job.stage if job is not None and job.was_submitted else None
        return self._holder.hold_back(
            uploaded, f"job waits for its parent: {waiting}", HeldReason(waiting.reason), stage=stage
        )

    def balance_low(self, uploaded: InboxObject, short: str, credits_needed: int) -> SubmitResult:
        """The provider account cannot cover the chain (`short` says why): held, nothing claimed."""
        if self._holder is None:
            raise ProviderUnavailable(short)
        return self._holder.hold_back(
            uploaded,
            f"job held back: {short}",
            HeldReason.PROVIDER_BALANCE_LOW,
            delay_seconds=self._holds.credits_hold_delay(HeldReason.PROVIDER_BALANCE_LOW),
            credits_needed=credits_needed,
        )

    def over_budget(self, uploaded: InboxObject, over: OverBudget, credits_needed: int) -> SubmitResult:
        error = JobError("BUDGET_EXCEEDED", str(over), ErrorStage.SUBMIT)
        policy = self._settings.budget_policy
        if not over.fits_ever or policy.over_budget is OverBudgetAction.REJECT:
            return self.reject(uploaded.job_id, error)
        if self._holder is None:
            raise ProviderUnavailable(str(over))  # no queue to hold it in (a direct S3 trigger): AWS retries
        return self._holder.hold_back(
            uploaded,
            f"over the credit budget; job held back: {over}",
            HeldReason.BUDGET_EXCEEDED,
            delay_seconds=self._holds.credits_hold_delay(HeldReason.BUDGET_EXCEEDED),
            credits_needed=credits_needed,
            until=over.period.next_opens,  # the full period (the month's, when both are) ends
        )

    def reject(self, job_id: str, error: JobError) -> SubmitResult:
        if self._ends.reject(job_id, error):
            logger.warning("job rejected", extra={"error_code": error.code})
            return SubmitResult(SubmitOutcome.REJECTED, job_id, error=error)
        return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)

    def fail_later_stage(self, job: Job, error: JobError) -> SubmitResult:
        """A chain's later stage found unusable: earlier stages were paid, so the job FAILED (not REJECTED)."""
        job_id = job.job_id
        between = JudgedStage(job.stage)  # only while no delivery has claimed (and so maybe paid) it
        if self._ends.fail(job_id, error, between, job.reservation, open_stage_paid=False):
            logger.warning("chained job failed before its next stage", extra={"error_code": error.code})
            return SubmitResult(SubmitOutcome.FAILED, job_id, error=error)
        return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)
