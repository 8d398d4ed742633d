"""The completion worker: a task the provider reports finished (or failed) is confirmed through
the authenticated Fetch endpoint, its images are copied, and the job completes or fails.

Webhooks and the reconciler only hand tasks over (completion_queue); this is the one completion
path. Every step is safe to repeat: copies are leased, and every state change is conditional.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from vary_region.aws.completion_queue import CompletionQueue, CompletionRequest
from vary_region.aws.job_files import JobFiles
from vary_region.completion.documents import credits_document, result_document
from vary_region.completion.grid_cut import GridNotCut, cut_grid
from vary_region.completion.image_copier import ImageCopier
from vary_region.core.credits import all_spent
from vary_region.core.errors import ErrorStage, ImageCopyError, JobError, ProviderRejected, ProviderUnavailable
from vary_region.core.job import Job, parse_timestamp, timestamp, utc_now
from vary_region.core.keys import ResultKeys
from vary_region.core.stages import JobStage, next_stage
from vary_region.endings import JobEndings, count_settled, ensure_error_document
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.provider.port import Provider
from vary_region.provider.task_result import TaskResult, TaskState
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, JudgedStage

# Longer than the completion function's timeout: a lease outlives only a copier that died.
COPY_LEASE_SECONDS = 180


class CompletionOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    UNCHANGED = "unchanged"  # stale, repeated, or for a finished job
    RETRY_LATER = "retry_later"  # not finished yet, Fetch down, or copying failed for now
    BUSY = "busy"  # another invocation is copying this job's images right now
    ADVANCED = "advanced"  # a chain's stage finished: its next stage goes to the submit function


@dataclass(frozen=True)
class CompletionResult:
    """What one completion request did to its job."""

    outcome: CompletionOutcome
    detail: str = ""


class JobCompleter:
    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        files: JobFiles,
        ends: JobEndings,
        apiframe: Provider,
        copier: ImageCopier,
        queue: CompletionQueue | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        wake: Callable[[str], None] | None = None,
    ) -> None:
        self._wake = wake  # hands a job's inbox key to the submit function (the next stage's claim)
        self._settings = settings
        self._store = store
        self._files = files
        self._apiframe = apiframe
        self._copier = copier
        self._queue = queue
        self._clock = clock
        self._sleep = sleep
        self._ends = ends

    @tracer.capture_method(capture_response=False)
    def handle(self, request: CompletionRequest, deadline: float | None = None) -> CompletionResult:
        """Work one request off the queue; what cannot be done now is queued again, delayed.

        deadline: a time.monotonic() value the work must end by (the invocation's own limit).
        """
        result = self.complete(request, deadline)
        if result.outcome in (CompletionOutcome.RETRY_LATER, CompletionOutcome.BUSY):
            if self._queue is not None and request.attempt < self._settings.completion_attempts:
                # Busy: look again once the other copier's lease has run out (it may have died).
                busy = result.outcome is CompletionOutcome.BUSY
                delay = COPY_LEASE_SECONDS if busy else self._settings.completion_retry_delay_seconds * request.attempt
                self._queue.request(replace(request, attempt=request.attempt + 1), delay_seconds=delay)
                logger.info("completion retried later", extra={"reason": result.detail, "attempt": request.attempt})
            else:  # the reconciler asks again once the job has been quiet long enough
                logger.warning("completion left to the reconciler", extra={"reason": result.detail})
        return result

    def complete(self, request: CompletionRequest, deadline: float | None = None) -> CompletionResult:
        job = self._store.get(request.job_id)
        logger.append_keys(job_id=request.job_id, task_id=request.task_id)
        if job is None:
            return CompletionResult(CompletionOutcome.UNCHANGED, "no such job")
        if job.status.is_final:
            ensure_error_document(self._files, ResultKeys(job.job_id, self._settings.results_prefix), job)
            return CompletionResult(CompletionOutcome.UNCHANGED, "the job is already finished")
        if request.task_id in {task for stage, task in job.stage_task_ids.items() if stage is not job.stage}:
            # A stage the job has left: its next stage may still wait for the submit function's turn.
            return (
                self._hand_on(job)
                if self._between_stages(job)
                else CompletionResult(CompletionOutcome.UNCHANGED, "the request names a stage the job has left")
            )
        if job.task_id and job.task_id != request.task_id:
            return CompletionResult(CompletionOutcome.UNCHANGED, "the request names another task than the job's")
        try:
            result = self._confirmed_result(request.task_id, deadline, single_image=job.stage is JobStage.UPSCALE)
        except (ProviderRejected, ProviderUnavailable, ValueError) as exc:
            # ValueError: a Fetch answer that is no task payload at all (an empty or non-JSON body).
            return CompletionResult(CompletionOutcome.RETRY_LATER, f"could not confirm the result through Fetch: {exc}")
        if result is None:
            return CompletionResult(
                CompletionOutcome.RETRY_LATER, "no time left to ask Fetch again about an incomplete result"
            )
        if result.task_id != request.task_id:  # the answer must be about the task this job paid for
            return CompletionResult(CompletionOutcome.RETRY_LATER, "Fetch answered about another task")
        if result.task_type and not _is_task_of(job.stage, result.task_type):
            # The id is ours, the kind of task is not the stage's: this answer is not about our task.
            return CompletionResult(CompletionOutcome.RETRY_LATER, f"Fetch answered with a {result.task_type} task")
        if result.state is TaskState.RUNNING:
            self._store.record_progress(job.job_id, result.task_id, result.percentage, self._clock())
            return CompletionResult(CompletionOutcome.RETRY_LATER, "Fetch says the task is still running")
        if result.state is TaskState.FAILED:
            message = result.error_message or ""
            if job.stage is not JobStage.INPAINT:
                message = f"the {job.stage} task failed: {message}"
            return self._fail(
                job,
                request.task_id,
                JobError("PROVIDER_TASK_FAILED", message, ErrorStage.PROVIDER),
                provider_failed=True,
            )
        upscale = job.stage is JobStage.UPSCALE
        incomplete = result.incomplete_reason(single_image=upscale)
        if incomplete:
            expected = "one image" if upscale else "a grid and four images"
            message = (
                f"the provider reported the {job.stage} task finished, but its result is not {expected}: {incomplete}"
            )
            return self._fail(job, request.task_id, JobError("RESULT_INCOMPLETE", message, ErrorStage.PROVIDER))
        if job.stage is not JobStage.INPAINT:
            return self._advance(job, result)
        return self._complete(job, result, deadline)

    def _advance(self, job: Job, result: TaskResult) -> CompletionResult:
        """A chain's imagine or upscale finished: the job moves on, and the submit function claims and
        pays the next stage (the one place paid calls are made)."""
        following = next_stage(job.stage)
        assert following is not None  # only inpaint is last
        if not self._store.advance_stage(job.job_id, job.stage, result.task_id, following, self._clock()):
            return CompletionResult(CompletionOutcome.UNCHANGED, "another delivery moved the job on first")
        logger.info("stage finished", extra={"stage": str(job.stage), "next_stage": str(following)})
        return self._hand_on(job)

    @staticmethod
    def _between_stages(job: Job) -> bool:
        return job.was_submitted and not job.stage_claimed and not job.task_id

    def _hand_on(self, job: Job) -> CompletionResult:
        if self._wake is None or not job.inbox_key:
            # The reconciler wakes a job left between stages once it has been quiet long enough.
            logger.warning("next stage not handed to the submit function; the reconciler will")
            return CompletionResult(CompletionOutcome.ADVANCED, "next stage left to the reconciler")
        self._wake(job.inbox_key)
        return CompletionResult(CompletionOutcome.ADVANCED)

    def _confirmed_result(self, task_id: str, deadline: float | None, single_image: bool) -> TaskResult | None:
        """The task as Fetch reports it; a finished result that is not whole yet is asked again a few
        times (a result being written may show fewer images), never completed as it is. None: the
        invocation ran out of time before Fetch was asked often enough to call the result incomplete."""
        attempts = self._settings.result_fetch_attempts
        for attempt in range(1, attempts + 1):
            result = self._apiframe.fetch(task_id, deadline)
            whole = result.incomplete_reason(single_image) is None
            if result.state is not TaskState.FINISHED or whole or attempt == attempts:
                return result
            pause = self._settings.result_refetch_delay_seconds * attempt
            if deadline is not None and time.monotonic() + pause > deadline:
                return None
            self._sleep(pause)
        raise AssertionError("unreachable")

    def _complete(self, job: Job, result: TaskResult, deadline: float | None) -> CompletionResult:
        now = self._clock()
        lease = uuid.uuid4().hex
        if not self._store.acquire_copy_lease(job.job_id, result.task_id, lease, now, COPY_LEASE_SECONDS, job.stage):
            return CompletionResult(CompletionOutcome.BUSY, "another invocation is copying this job's images")
        keys = ResultKeys(job.job_id, self._settings.results_prefix)
        # The parent comes along in the same parallel copy; a parent that can no longer be copied (an
        # expired URL) is left out of result.json and does not fail the job.
        parent_source = {"parent": job.parent_image_url} if job.parent_image_url else None
        try:
            copied = self._copier.copy_all(result.result_urls, keys.image, deadline, optional=parent_source)
        except ImageCopyError as exc:
            if deadline is not None and time.monotonic() >= deadline and not exc.permanent:
                # This invocation ran out of time, which says nothing against the image host.
                self._store.release_copy_lease(job.job_id, lease)
                return CompletionResult(CompletionOutcome.RETRY_LATER, f"no time left to copy: {exc}")
            failures = self._store.record_copy_failure(job.job_id, lease, str(exc), self._clock())
            logger.warning("result images not copied", extra={"reason": str(exc), "copy_failures": failures})
            if exc.permanent or failures >= self._settings.copy_failures_before_failed:
                return self._fail(job, result.task_id, JobError("COPY_FAILED", str(exc), ErrorStage.COPY))
            return CompletionResult(CompletionOutcome.RETRY_LATER, str(exc))
        except BaseException:
            # An unexpected failure: the next try must not wait for the lease to run out.
            self._store.release_copy_lease(job.job_id, lease)
            raise
        parent = next((image for image in copied if image.name == "parent"), None)
        images = [image for image in copied if image.name != "parent"]
        try:
            if result.one_url_result:  # the grid alone: its four images are its quarters
                images += cut_grid(self._files, images[0], keys.image, self._settings.max_image_bytes)
            completed_at = timestamp(self._clock())
            summary = {"result_json": keys.result_json, "images": {image.name: image.key for image in images}}
            tasks = self._tasks(job, result.task_id)
            document = result_document(
                job, result.task_id, images, completed_at, tasks=tasks, parent=parent, cut=result.one_url_result
            )
            settlement = all_spent(job.reservation) if job.reservation is not None else None
            if settlement is not None:
                document["credits"] = credits_document(settlement)
            if job.mask_key:
                document["mask"] = {"key": job.mask_key}
            self._files.write_json(keys.result_json, document)
            completed = self._store.mark_completed(job.job_id, result.task_id, summary, self._clock(), settlement)
        except GridNotCut as exc:
            message = f"the provider's result is a grid alone, and it could not be cut into four images: {exc}"
            return self._fail(job, result.task_id, JobError("RESULT_INCOMPLETE", message, ErrorStage.PROVIDER))
        except BaseException:
            self._store.release_copy_lease(job.job_id, lease)
            raise
        if not completed:
            return CompletionResult(CompletionOutcome.UNCHANGED, "another delivery completed the job first")
        metrics.add_metric(name="ImagesCopied", unit=MetricUnit.Count, value=len(images))
        metrics.add_metric(name="BytesCopied", unit=MetricUnit.Bytes, value=sum(image.size for image in images))
        metrics.add_metric(name="JobsCompleted", unit=MetricUnit.Count, value=1)
        if settlement is not None:
            count_settled(settlement)
        if job.created_at:
            duration = (parse_timestamp(completed_at) - parse_timestamp(job.created_at)).total_seconds()
            metrics.add_metric(name="JobDurationSeconds", unit=MetricUnit.Seconds, value=round(duration, 3))
        logger.info("job completed", extra={"images": len(images)})
        return CompletionResult(CompletionOutcome.COMPLETED)

    def _tasks(self, job: Job, inpaint_task: str) -> list[dict[str, object]]:
        """Every paid task of the job, in chain order, with what each cost."""
        ids = dict(job.stage_task_ids) | {JobStage.INPAINT: inpaint_task}
        # The prices the job reserved at (the settings may have changed since); jobs older than the
        # ledger, at today's prices.
        reserved = dict(job.reservation.credits) if job.reservation is not None else {}
        return [
            {
                "stage": str(stage),
                "task_id": ids[stage],
                "credits": reserved.get(stage, self._settings.credits_of(stage.value)),
            }
            for stage in JobStage
            if stage in ids
        ]

    def _fail(self, job: Job, task_id: str, error: JobError, *, provider_failed: bool = False) -> CompletionResult:
        """The open stage's task was accepted (it is paid), unless the provider failed it and refunds.

        Pinned to that stage and task as this worker read them: a job that moved on meanwhile (another
        delivery advanced it, and its next stage may be paid) is not this verdict's to fail.
        """
        # A task not recorded yet (its webhook outran the submission's write) is the stage's claim's.
        judged = JudgedStage(job.stage, task_id, None if job.task_id else job.submit_claim)
        if not self._ends.fail(
            job.job_id, error, judged, job.reservation, open_stage_paid=True, provider_failed=provider_failed
        ):
            return CompletionResult(CompletionOutcome.UNCHANGED, "the job had finished or moved on")
        metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
        logger.warning("job failed", extra={"error_code": error.code})
        return CompletionResult(CompletionOutcome.FAILED, error.message)


def _is_task_of(stage: JobStage, task_type: str) -> bool:
    """APIFRAME's task types: "imagine", "upscale#1".."upscale#4", "inpaint"."""
    kind = task_type.strip().lower()
    return kind.startswith("upscale") if stage is JobStage.UPSCALE else kind == stage.value
