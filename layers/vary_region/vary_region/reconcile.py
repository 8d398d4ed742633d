"""The safety net for lost webhooks: ask Fetch about jobs that have been quiet for too long and
finish them through the same completion path as the webhook."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vary_region.apiframe import FETCH_MANY_LIMIT, ApiframeClient
from vary_region.completion import JobCompleter
from vary_region.errors import JobError, ProviderRejected, ProviderUnavailable, Stage
from vary_region.job import Job, parse_timestamp, utc_now
from vary_region.job_files import JobFiles
from vary_region.job_keys import ResultKeys
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.results import write_error
from vary_region.settings import Settings
from vary_region.task_store import TaskStore


@dataclass
class ReconcileReport:
    examined: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, object]:
        return {"examined": self.examined, "outcomes": dict(self.outcomes)}


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        files: JobFiles,
        apiframe: ApiframeClient,
        completer: JobCompleter,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._apiframe = apiframe
        self._completer = completer
        self._clock = clock

    @tracer.capture_method(capture_response=False)
    def run(self, limit: int = 200) -> ReconcileReport:
        now = self._clock()
        quiet = self._store.quiet_jobs(now - timedelta(seconds=self._settings.reconcile_quiet_seconds), limit)
        report = ReconcileReport(examined=len(quiet))
        with_task = [job for job in quiet if job.task_id]
        for job in quiet:
            if not job.task_id:
                report.outcomes[self._settle_job_without_task(job, now)] += 1
        for start in range(0, len(with_task), FETCH_MANY_LIMIT):
            batch = with_task[start : start + FETCH_MANY_LIMIT]
            try:
                results = {
                    r.task_id: r for r in self._apiframe.fetch_many([job.task_id for job in batch if job.task_id])
                }
            except (ProviderRejected, ProviderUnavailable) as exc:
                logger.warning("Fetch failed during reconciliation", extra={"reason": str(exc)})
                report.outcomes["fetch_failed"] += len(batch)
                continue
            for job in batch:
                result = results.get(job.task_id or "")
                if result is None:
                    self._store.touch(job.job_id, self._clock())
                    report.outcomes["unknown_to_provider"] += 1
                    continue
                outcome = self._completer.apply(job, result, confirmed=True)
                if outcome.outcome in ("progress", "unchanged"):
                    self._store.touch(job.job_id, self._clock())
                report.outcomes[str(outcome.outcome)] += 1
        # An idle schedule would otherwise log a line every period.
        (logger.info if report.examined else logger.debug)("reconciliation finished", extra=report.to_dict())
        return report

    def _settle_job_without_task(self, job: Job, now: datetime) -> str:
        if job.was_submitted:
            claimed = parse_timestamp(job.submit_claimed_at or job.updated_at)
            if now - claimed < timedelta(seconds=self._settings.submit_ambiguity_window_seconds):
                return "waiting_for_task_id"
            error = JobError(
                "SUBMIT_AMBIGUOUS",
                "the submission's outcome is unknown and no webhook arrived within the ambiguity window; "
                "check the APIFRAME dashboard before resubmitting under a new job id",
                Stage.RECONCILE,
            )
            if self._store.mark_failed(job.job_id, error, self._clock()):
                write_error(
                    self._files, ResultKeys(job.job_id, self._settings.results_prefix), job.job_id, "FAILED", error
                )
                metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
            return "failed_ambiguous"
        received = parse_timestamp(job.created_at or job.updated_at)
        if now - received < timedelta(seconds=self._settings.stale_receipt_seconds):
            return "waiting_for_files"
        error = JobError(
            "JOB_INCOMPLETE", "only one of job.json and the mask arrived; the job was never submitted", Stage.RECONCILE
        )
        if self._store.mark_rejected(job.job_id, error, self._clock()):
            write_error(
                self._files, ResultKeys(job.job_id, self._settings.results_prefix), job.job_id, "REJECTED", error
            )
            metrics.add_metric(name="JobsRejected", unit=MetricUnit.Count, value=1)
        return "rejected_incomplete"
