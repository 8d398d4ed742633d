"""How a job ends unsuccessfully, whichever function ends it: the failed or rejected state, written first,
then error.json beside the results (repaired by a later delivery if that write failed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from vary_region.aws.job_files import JobFiles
from vary_region.core.errors import JobError
from vary_region.core.job import Job, JobStatus
from vary_region.core.keys import ResultKeys

if TYPE_CHECKING:  # the submit function never copies images: its cold start skips the copier
    from vary_region.core.credits import CreditReservation, Settlement
    from vary_region.store.job_table import JobTable, JudgedStage


def write_error(files: JobFiles, keys: ResultKeys, job_id: str, status: str, error: JobError) -> None:
    files.write_json(keys.error_json, {"job_id": job_id, "status": status, "error": error.to_dict()})


class JobEndings:
    """Ends a job FAILED or REJECTED: the state first (under the caller's condition), error.json second,
    so a lost document is repaired by the next delivery (ensure_error_document), never the reverse."""

    def __init__(self, store: JobTable, files: JobFiles, results_prefix: str, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._files = files
        self._results_prefix = results_prefix
        self._clock = clock

    def fail(
        self,
        job_id: str,
        error: JobError,
        judged: JudgedStage,
        reservation: CreditReservation | None = None,
        *,
        open_stage_paid: bool,
        provider_failed: bool = False,
    ) -> bool:
        """judged: the stage (and its task or claim) the failure is about: the job fails only while it
        holds exactly that, and its reservation is settled as of that stage.
        open_stage_paid: that stage's task was (or may have been) accepted, so its credits are spent
        (unless the provider failed it and the policy says the provider refunds it)."""
        settlement = judged.settlement(
            reservation,
            open_stage_paid=open_stage_paid,
            provider_failed=provider_failed,
            policy=self._store.budget_policy,
        )
        if not self._store.mark_failed(job_id, error, self._clock(), judged, settlement=settlement):
            return False
        if settlement is not None:
            count_settled(settlement)
        write_error(self._files, ResultKeys(job_id, self._results_prefix), job_id, "FAILED", error)
        return True

    def reject(self, job_id: str, error: JobError) -> bool:
        if not self._store.mark_rejected(job_id, error, self._clock()):
            return False
        write_error(self._files, ResultKeys(job_id, self._results_prefix), job_id, "REJECTED", error)
        return True


def count_settled(settlement: Settlement) -> None:
    """CreditsSpent, and CreditsReturned (what the budget alarm takes off CreditsReserved)."""
    from vary_region.observability import MetricUnit, metrics

    if settlement.spent_total:
        metrics.add_metric(name="CreditsSpent", unit=MetricUnit.Count, value=settlement.spent_total)
    if settlement.returned:
        metrics.add_metric(name="CreditsReturned", unit=MetricUnit.Count, value=settlement.returned)


def ensure_error_document(files: JobFiles, keys: ResultKeys, job: Job) -> None:
    """Write error.json for a finished, unsuccessful job if it is missing.

    The state is recorded first and error.json second; if that write failed, the redelivered event
    (or repeated webhook) finds the job final and repairs the missing document here.
    """
    if job.error is None or job.status not in (JobStatus.FAILED, JobStatus.REJECTED):
        return
    if files.object_size(keys.error_json) is None:
        write_error(files, keys, job.job_id, str(job.status), job.error)
