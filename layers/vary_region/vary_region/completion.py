"""What happens when APIFRAME reports on a task, from a webhook or from the reconciler.

Progress is recorded; a final "finished" signal is confirmed through the authenticated Fetch
endpoint (the webhook body is untrusted even with the right secret), then the images are copied
and the job completes; a failed task fails the job. Every path is safe to repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from vary_region.apiframe import ApiframeClient
from vary_region.errors import ImageCopyError, JobError, ProviderRejected, ProviderUnavailable, Stage
from vary_region.image_copier import ImageCopier
from vary_region.job import Job, parse_timestamp, timestamp, utc_now
from vary_region.job_files import JobFiles
from vary_region.job_keys import ResultKeys
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.results import ensure_error_document, result_document, write_error
from vary_region.settings import Settings
from vary_region.task_result import TaskResult, TaskState
from vary_region.task_store import TaskStore

COPY_LEASE_SECONDS = 120


class UpdateOutcome(StrEnum):
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    UNCHANGED = "unchanged"  # stale, repeated, or for a finished job
    COPY_RETRY = "copy_retry"  # copying failed for now; the reconciler tries again later
    BUSY = "busy"  # another invocation is copying this job's images right now


@dataclass(frozen=True)
class UpdateResult:
    """What one progress or final update did to its job."""

    outcome: UpdateOutcome
    detail: str = ""


class JobCompleter:
    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        files: JobFiles,
        apiframe: ApiframeClient,
        copier: ImageCopier,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._apiframe = apiframe
        self._copier = copier
        self._clock = clock

    @tracer.capture_method(capture_response=False)
    def apply(
        self, job: Job, update: TaskResult, *, confirmed: bool = False, deadline: float | None = None
    ) -> UpdateResult:
        """Apply one report about the job's task.

        confirmed: it came from Fetch, not a webhook. deadline: a time.monotonic() value the work
        must end by (the invocation's own time limit); what does not fit is retried later.
        """
        logger.append_keys(job_id=job.job_id, task_id=update.task_id)
        if job.status.is_final:
            ensure_error_document(self._files, ResultKeys(job.job_id, self._settings.results_prefix), job)
            return UpdateResult(UpdateOutcome.UNCHANGED, "the job is already finished")
        if update.state is TaskState.RUNNING:
            changed = self._store.record_progress(job.job_id, update.task_id, update.percentage, self._clock())
            return UpdateResult(UpdateOutcome.PROGRESS if changed else UpdateOutcome.UNCHANGED)
        if not confirmed:
            try:
                update = self._apiframe.fetch(update.task_id, deadline)
            except (ProviderRejected, ProviderUnavailable) as exc:
                return UpdateResult(UpdateOutcome.COPY_RETRY, f"could not confirm the result through Fetch: {exc}")
            if update.state is TaskState.RUNNING:
                self._store.record_progress(job.job_id, update.task_id, update.percentage, self._clock())
                return UpdateResult(UpdateOutcome.PROGRESS, "Fetch says the task is still running")
        if update.state is TaskState.FAILED:
            return self._fail(job, JobError("PROVIDER_TASK_FAILED", update.error_message or "", Stage.PROVIDER))
        return self._complete(job, update, deadline)

    def _complete(self, job: Job, result: TaskResult, deadline: float | None) -> UpdateResult:
        now = self._clock()
        lease = uuid.uuid4().hex
        if not self._store.acquire_copy_lease(job.job_id, result.task_id, lease, now, COPY_LEASE_SECONDS):
            return UpdateResult(UpdateOutcome.BUSY)
        keys = ResultKeys(job.job_id, self._settings.results_prefix)
        try:
            images = self._copier.copy_all(result.result_urls, keys.image, deadline)
        except ImageCopyError as exc:
            failures = self._store.record_copy_failure(job.job_id, lease, str(exc), self._clock())
            logger.warning("result images not copied", extra={"reason": str(exc), "copy_failures": failures})
            if exc.permanent or failures >= self._settings.copy_failures_before_failed:
                return self._fail(job, JobError("COPY_FAILED", str(exc), Stage.COPY))
            return UpdateResult(UpdateOutcome.COPY_RETRY, str(exc))
        completed_at = timestamp(self._clock())
        self._files.write_json(keys.result_json, result_document(job, result.task_id, images, completed_at))
        summary = {"result_json": keys.result_json, "images": {image.name: image.key for image in images}}
        if not self._store.mark_completed(job.job_id, result.task_id, summary, self._clock()):
            return UpdateResult(UpdateOutcome.UNCHANGED, "another delivery completed the job first")
        metrics.add_metric(name="ImagesCopied", unit=MetricUnit.Count, value=len(images))
        metrics.add_metric(name="BytesCopied", unit=MetricUnit.Bytes, value=sum(image.size for image in images))
        metrics.add_metric(name="JobsCompleted", unit=MetricUnit.Count, value=1)
        if job.created_at:
            duration = (parse_timestamp(completed_at) - parse_timestamp(job.created_at)).total_seconds()
            metrics.add_metric(name="JobDurationSeconds", unit=MetricUnit.Seconds, value=round(duration, 3))
        logger.info("job completed", extra={"images": len(images)})
        return UpdateResult(UpdateOutcome.COMPLETED)

    def _fail(self, job: Job, error: JobError) -> UpdateResult:
        if not self._store.mark_failed(job.job_id, error, self._clock()):
            return UpdateResult(UpdateOutcome.UNCHANGED, "the job had already finished")
        write_error(self._files, ResultKeys(job.job_id, self._settings.results_prefix), job.job_id, "FAILED", error)
        metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
        logger.warning("job failed", extra={"error_code": error.code})
        return UpdateResult(UpdateOutcome.FAILED, error.message)
