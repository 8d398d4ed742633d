"""The safety net for lost webhooks: ask Fetch about jobs that have been quiet for too long and
hand the finished ones to the completion worker, the same path a webhook takes. No copy runs here,
so one run can look at thousands of jobs."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vary_region.aws.completion_queue import CompletionQueue, CompletionRequest
from vary_region.core.errors import ErrorStage, JobError, ProviderRejected, ProviderUnavailable, RequestNotSent
from vary_region.core.job import Job, parse_timestamp, utc_now
from vary_region.endings import JobEndings
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.provider.apiframe_v1 import FETCH_MANY_LIMIT
from vary_region.provider.port import Provider
from vary_region.provider.task_result import TaskResult, TaskState
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, JudgedStage

# Enough for one Fetch batch (its retries included) and the writes it leads to.
_TIME_FOR_A_BATCH = 25.0
# A task that finished near the age limit still has this long for its result to be brought home.
FINISHED_GRACE = timedelta(hours=1)


@dataclass
class ReconcileReport:
    """What one reconciler run examined and did, by outcome."""

    examined: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    provider_credits: int | None = None  # the account's balance, published as a metric

    def to_dict(self) -> dict[str, object]:
        report: dict[str, object] = {"examined": self.examined, "outcomes": dict(self.outcomes)}
        if self.provider_credits is not None:
            report["provider_credits"] = self.provider_credits
        return report


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        ends: JobEndings,
        apiframe: Provider,
        queue: CompletionQueue,
        clock: Callable[[], datetime] = utc_now,
        wake: Callable[[str], None] | None = None,
        balance: Callable[[], int | None] | None = None,
    ) -> None:
        self._balance = balance  # reads the provider account's credits (GET /account)
        self._wake = wake  # hands a job's inbox key to the submit function
        self._settings = settings
        self._store = store
        self._apiframe = apiframe
        self._queue = queue
        self._clock = clock
        self._ends = ends

    @tracer.capture_method(capture_response=False)
    def run(self, limit: int | None = None, deadline: float | None = None) -> ReconcileReport:
        """deadline: a time.monotonic() value to stop by; jobs not reached wait for the next run."""
        limit = self._settings.reconcile_batch_limit if limit is None else limit
        now = self._clock()
        quiet = self._store.quiet_jobs(now - timedelta(seconds=self._settings.reconcile_quiet_seconds), limit)
        report = ReconcileReport(examined=len(quiet))
        with_task = [job for job in quiet if job.task_id]
        for job in quiet:
            if not job.task_id:
                report.outcomes[self._settle_job_without_task(job, now)] += 1
        for start in range(0, len(with_task), FETCH_MANY_LIMIT):
            if deadline is not None and time.monotonic() > deadline - _TIME_FOR_A_BATCH:
                report.outcomes["deferred_to_next_run"] += len(with_task) - start
                break
            batch = with_task[start : start + FETCH_MANY_LIMIT]
            try:
                fetched = self._apiframe.fetch_many([job.task_id for job in batch if job.task_id], deadline)
            except (ProviderRejected, ProviderUnavailable) as exc:
                # Says nothing about these tasks: never time a job out because Fetch itself is down.
                logger.warning("Fetch failed during reconciliation", extra={"reason": str(exc)})
                for job in batch:
                    self._store.touch(job.job_id, self._clock())
                report.outcomes["fetch_failed"] += len(batch)
                continue
            results = {result.task_id: result for result in fetched}
            finished = [job for job in batch if self._to_hand_over(job, results.get(job.task_id or ""), now)]
            self._queue.request_many([CompletionRequest(job.job_id, job.task_id or "") for job in finished])
            for job in batch:
                result = results.get(job.task_id or "")
                report.outcomes[self._settle_job_with_task(job, result, now)] += 1
        report.provider_credits = self._publish_balance()
        # An idle schedule would otherwise log a line every period.
        (logger.info if report.examined else logger.debug)("reconciliation finished", extra=report.to_dict())
        return report

    def _publish_balance(self) -> int | None:
        """The account's credits as the ProviderCredits metric, which the low-balance alarm watches."""
        if self._balance is None:
            return None
        try:
            credits = self._balance()
        except (ProviderRejected, ProviderUnavailable, RequestNotSent) as exc:
            logger.warning("the provider's balance could not be read", extra={"reason": type(exc).__name__})
            return None
        if credits is not None:
            metrics.add_metric(name="ProviderCredits", unit=MetricUnit.Count, value=credits)
        return credits

    def _settle_job_with_task(self, job: Job, result: TaskResult | None, now: datetime) -> str:
        if self._to_hand_over(job, result, now):
            # Handed over above; back of the line so the next run does not ask again at once.
            self._store.touch(job.job_id, self._clock())
            return "handed_to_completion"
        if self._too_old(job, now, FINISHED_GRACE if _is_final(result) else timedelta(0)):
            # Forgotten by the provider, never finishing, or a result that could never be brought home:
            # end it, which also frees its provider slot.
            if result is None:
                reason = "the provider does not know the task"
            elif _is_final(result):
                reason = "its result could not be confirmed and copied"
            else:
                reason = "the task never finished"
            limit = self._settings.max_task_age_seconds
            error = JobError("TASK_TIMED_OUT", f"{reason} within {limit} s", ErrorStage.RECONCILE)
            return "timed_out" if self._fail(job, error) else "moved_on"
        # Still running: record its progress, which also puts it at the back of the line.
        if result is not None and self._store.record_progress(
            job.job_id, result.task_id, result.percentage, self._clock()
        ):
            return "still_open"
        # Back of the line: every open job gets its turn, however many are waiting.
        self._store.touch(job.job_id, self._clock())
        return "unknown_to_provider" if result is None else "still_open"

    def _to_hand_over(self, job: Job, result: TaskResult | None, now: datetime) -> bool:
        return _is_final(result) and not self._too_old(job, now, FINISHED_GRACE)

    def _too_old(self, job: Job, now: datetime, grace: timedelta) -> bool:
        claimed = parse_timestamp(job.submit_claimed_at or job.created_at)
        return now - claimed > timedelta(seconds=self._settings.max_task_age_seconds) + grace

    def _settle_job_without_task(self, job: Job, now: datetime) -> str:
        if job.was_submitted:
            # The index holds no stage: a chain between two stages is told apart on the whole item (rare).
            whole = self._store.get(job.job_id)
            if whole is not None and not whole.status.is_final and not whole.stage_claimed:
                if self._held_too_long(whole.stage_opened_at or whole.submitted_at, now):
                    return self._end_chain_between_stages(whole)
                return self._hand_on_next_stage(whole)
            claimed = parse_timestamp(job.submit_claimed_at or job.updated_at)
            if now - claimed < timedelta(seconds=self._settings.submit_ambiguity_window_seconds):
                self._store.touch(job.job_id, self._clock())
                return "waiting_for_task_id"
            error = JobError(
                "SUBMIT_AMBIGUOUS",
                "the submission's outcome is unknown and no webhook arrived within the ambiguity window; "
                "check the APIFRAME dashboard before resubmitting under a new job id",
                ErrorStage.RECONCILE,
            )
            return "failed_ambiguous" if self._fail(job, error) else "moved_on"
        if job.held_at and self._held_too_long(job.held_at, now):
            return self._reject_held_too_long(job)
        received = parse_timestamp(job.created_at or job.updated_at)
        if job.held_at or now - received < timedelta(seconds=self._settings.stale_receipt_seconds):
            # Held jobs are complete and wait in the queue for a slot or for the provider to come back.
            self._store.touch(job.job_id, self._clock())
            return "held" if job.held_at else "waiting_for_files"
        error = JobError(
            "JOB_INCOMPLETE",
            "only one of job.json and the mask arrived; the job was never submitted",
            ErrorStage.RECONCILE,
        )
        if self._ends.reject(job.job_id, error):
            metrics.add_metric(name="JobsRejected", unit=MetricUnit.Count, value=1)
        return "rejected_incomplete"

    def _held_too_long(self, since: str | None, now: datetime) -> bool:
        return since is not None and now - parse_timestamp(since) > timedelta(seconds=self._settings.max_hold_seconds)

    def _reject_held_too_long(self, job: Job) -> str:
        """A job held back (no slot, no budget, a parent that never finishes...) for longer than
        MAX_HOLD_SECONDS: nothing was paid; it ends here instead of waiting for ever."""
        whole = self._store.get(job.job_id)  # the index holds no reason (rare: once per job)
        reason = whole.held_reason if whole is not None and whole.held_reason else "a hold"
        error = JobError(
            "HELD_TOO_LONG",
            f"held back ({reason}) since {job.held_at}, longer than MAX_HOLD_SECONDS "
            f"({self._settings.max_hold_seconds} s); nothing was paid",
            ErrorStage.RECONCILE,
        )
        if self._ends.reject(job.job_id, error):
            metrics.add_metric(name="JobsRejected", unit=MetricUnit.Count, value=1)
        return "rejected_held_too_long"

    def _end_chain_between_stages(self, job: Job) -> str:
        """A chain whose next stage was not claimed within MAX_HOLD_SECONDS of its opening: it fails,
        the stages it paid for count as spent and the unspent ones go back to the budget."""
        error = JobError(
            "HELD_TOO_LONG",
            f"the chain's {job.stage} stage could not start within MAX_HOLD_SECONDS "
            f"({self._settings.max_hold_seconds} s) of the stage before it finishing"
            + (f" (last held back: {job.held_reason})" if job.held_reason else ""),
            ErrorStage.RECONCILE,
        )
        between = JudgedStage(job.stage)  # only while no delivery has claimed (and so maybe paid) it
        if self._ends.fail(job.job_id, error, between, job.reservation, open_stage_paid=False):
            metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
            return "failed_held_too_long"
        return "moved_on"

    def _hand_on_next_stage(self, job: Job) -> str:
        """A chain's stage finished, but its next stage was never claimed (the wake-up was lost, or it
        waits in the queue): hand the job to the submit function again. A repeat costs nothing: the
        claim lets one submission through."""
        self._store.touch(job.job_id, self._clock())
        if self._wake is None or not job.inbox_key:
            logger.warning("a job between stages cannot be handed on", extra={"job_id": job.job_id})
            return "between_stages"
        self._wake(job.inbox_key)
        return "next_stage_handed_on"

    def _fail(self, job: Job, error: JobError) -> bool:
        """The open stage's task was (or may have been) accepted: it counts as spent.

        `job` is the index's view, read before Fetch was asked: the failure is pinned to the task it
        names (TASK_TIMED_OUT), or to its claim with no task (SUBMIT_AMBIGUOUS), at the stage that
        task or claim belongs to. A job that moved on since (its stage finished, its next stage
        claimed or paid) is not failed, and nothing is settled.
        """
        # The index's projection holds no stage nor reservation: a job that ends reads its whole item (rare).
        whole = self._store.get(job.job_id)
        if whole is None or whole.status.is_final:
            return False
        judged = JudgedStage(whole.stage, job.task_id, None if job.task_id else job.submit_claim)
        if not self._ends.fail(job.job_id, error, judged, whole.reservation, open_stage_paid=True):
            return False
        metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
        return True


def _is_final(result: TaskResult | None) -> bool:
    return result is not None and result.state is not TaskState.RUNNING
