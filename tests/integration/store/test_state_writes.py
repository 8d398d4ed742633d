"""Given a job table of the test's own (moto server), when a worker writes a job's state on a view of it
that has gone stale, or the answer to its write is lost, then:

- a failure is written only while the job still holds the stage, and the task or claim, it was judged
  on: a late verdict about a stage a chain has left fails nothing and returns no credit to the ledger;
- a stage that moves on drops the ambiguity flag of the stage before it;
- a write whose first attempt was applied but whose answer was lost (botocore sent it again, and the
  condition failed on the write itself) counts as won: the job's error.json is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from vary_region.aws.completion_queue import CompletionRequest
from vary_region.aws.job_files import JobFiles
from vary_region.completion.worker import CompletionOutcome, JobCompleter
from vary_region.core.credits import BudgetPolicy, periods_at, reserve
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.stages import JobStage, stages_from
from vary_region.endings import JobEndings
from vary_region.provider.task_result import TaskResult, TaskState
from vary_region.reconciler.reconciler import Reconciler
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.wiring import job_endings

from tests.support.builders import new_job_id
from tests.support.waits import job_item, read_json

pytestmark = pytest.mark.generation_blind

PRICES = {JobStage.IMAGINE: 4, JobStage.UPSCALE: 2, JobStage.INPAINT: 4}
POLICY = BudgetPolicy(daily_limit=1000)
_day_offset = iter(range(1, 10_000))


def _fresh_now() -> datetime:
    """A day no other test of the module wrote in: each test's ledger periods start empty, and the
    reconciler (which takes every job quiet before its clock) finds only its own test's jobs."""
    return datetime(2031, 1, 1, 12, 0, tzinfo=UTC) + timedelta(days=next(_day_offset) * 40)


@pytest.fixture()
def store(own_table: Any) -> JobTable:
    return JobTable(own_table, max_active_tasks=1000, budget=POLICY)


@pytest.fixture()
def settings(stack: Any, own_table: Any) -> Settings:
    return Settings(jobs_bucket=stack.info.bucket, jobs_table=own_table.name, reconcile_quiet_seconds=1)


@pytest.fixture()
def files(stack: Any) -> JobFiles:
    return JobFiles(boto3.client("s3"), stack.info.bucket)


def _usage(store: JobTable, now: datetime) -> tuple[int, int]:
    """The day's (reserved, spent)."""
    day = store.credit_usage(periods_at(now))[0]
    return day.reserved, day.spent


def _upscale_submitted(store: JobTable, job_id: str, now: datetime) -> None:
    """A chain from an imagine grid: its upscale claimed (the chain's credits reserved) and paid."""
    assert store.record_received(job_id, now)
    reservation = reserve(stages_from(JobStage.UPSCALE), PRICES.__getitem__, now, "t-up")
    assert store.claim_submission(
        job_id, "t-up", "h", "grid-1", "p", {}, now, stage=JobStage.UPSCALE, reservation=reservation
    )
    assert store.mark_submitted(job_id, "t-up", "task-up", now, JobStage.UPSCALE)


def _moved_on_to_a_paid_inpaint(store: JobTable, job_id: str, now: datetime) -> None:
    """What another worker does meanwhile: the upscale finished, the inpaint is claimed and paid."""
    assert store.advance_stage(job_id, JobStage.UPSCALE, "task-up", JobStage.INPAINT, now)
    assert store.claim_submission(job_id, "t-in", "h2", None, None, {}, now, stage=JobStage.INPAINT, first=False)
    assert store.mark_submitted(job_id, "t-in", "task-in", now, JobStage.INPAINT)


def _assert_open_on_its_inpaint(own_table: Any, job_id: str) -> None:
    item = job_item(own_table, job_id)
    assert item["status"] == "SUBMITTED" or item["status"] == "PROCESSING", item.get("error")
    assert (item["stage"], item["task_id"], item["submit_claim"]) == ("inpaint", "task-in", "t-in")
    assert "error" not in item and "credits_spent" not in item and "credits_returned" not in item


class _Provider:
    """Fetch answers that a task failed; `meanwhile` runs first, as another worker's writes would
    while this worker waits for Fetch."""

    def __init__(self, meanwhile: Callable[[], None] = lambda: None, state: TaskState = TaskState.FAILED) -> None:
        self._meanwhile = meanwhile
        self._state = state

    def _answer(self, task_id: str) -> TaskResult:
        kind = "upscale#1" if task_id == "task-up" else "inpaint"
        return TaskResult(task_id, self._state, error_message="the provider failed it", task_type=kind)

    def fetch(self, task_id: str, deadline: float | None = None) -> TaskResult:
        self._meanwhile()
        return self._answer(task_id)

    def fetch_many(self, task_ids: list[str], deadline: float | None = None) -> list[TaskResult]:
        self._meanwhile()
        return [self._answer(task_id) for task_id in task_ids]


class _Queue:
    def __init__(self) -> None:
        self.requests: list[CompletionRequest] = []

    def request(self, request: CompletionRequest, delay_seconds: int = 0) -> None:
        self.requests.append(request)

    def request_many(self, requests: list[CompletionRequest]) -> None:
        self.requests.extend(requests)


def _completer(settings: Settings, store: JobTable, files: JobFiles, provider: _Provider, now: datetime) -> Any:
    ends = job_endings(settings, store, files, clock=lambda: now)
    return JobCompleter(settings, store, files, ends, provider, copier=None, clock=lambda: now)  # type: ignore[arg-type]


def test_a_late_failure_of_a_stage_the_chain_has_left_fails_nothing_and_returns_no_credit(
    store, own_table, settings, files
):
    now = _fresh_now()
    job_id = new_job_id("stale-verdict")
    _upscale_submitted(store, job_id, now)
    usage = _usage(store, now)
    assert usage == (6, 0)

    # This worker read the job on its upscale; while it asked Fetch, the chain moved on and paid its inpaint.
    provider = _Provider(meanwhile=lambda: _moved_on_to_a_paid_inpaint(store, job_id, now))
    result = _completer(settings, store, files, provider, now).complete(CompletionRequest(job_id, "task-up"))

    assert result.outcome is CompletionOutcome.UNCHANGED, result
    _assert_open_on_its_inpaint(own_table, job_id)
    assert _usage(store, now) == usage, "no credit goes back to the ledger for a paid inpaint"
    assert files.object_size(f"results/{job_id}/error.json") is None

    # The same verdict about the task the job has now still fails it, settled as of its inpaint.
    current = _completer(settings, store, files, _Provider(), now).complete(CompletionRequest(job_id, "task-in"))

    assert current.outcome is CompletionOutcome.FAILED
    item = job_item(own_table, job_id)
    assert (item["status"], item["error"]["code"]) == ("FAILED", "PROVIDER_TASK_FAILED")
    assert item["credits_spent"] == {"upscale": 2}, "the upscale was paid; the failed inpaint is refunded"
    assert _usage(store, now) == (2, 2), "the inpaint's 4 credits went back"
    assert read_json(boto3.client("s3"), files.bucket, f"results/{job_id}/error.json")["status"] == "FAILED"


def test_the_reconciler_timing_out_a_stage_the_chain_has_left_fails_nothing(store, own_table, settings, files):
    claimed = _fresh_now()
    job_id = new_job_id("stale-timeout")
    _upscale_submitted(store, job_id, claimed)
    usage = _usage(store, claimed)
    clock = claimed + timedelta(seconds=settings.max_task_age_seconds + 3600)

    # The reconciler's view (the open-jobs index) names the upscale, claimed long ago and still
    # running at the provider; before its verdict is written, the chain moves on and pays its inpaint.
    provider = _Provider(meanwhile=lambda: _moved_on_to_a_paid_inpaint(store, job_id, clock), state=TaskState.RUNNING)
    ends = job_endings(settings, store, files, clock=lambda: clock)
    reconciler = Reconciler(settings, store, ends, provider, _Queue(), clock=lambda: clock)  # type: ignore[arg-type]
    report = reconciler.run()

    assert report.examined == 1 and report.outcomes == {"moved_on": 1}, report.to_dict()
    _assert_open_on_its_inpaint(own_table, job_id)
    assert _usage(store, claimed) == usage


def test_a_failure_is_pinned_to_the_task_or_claim_it_was_judged_on(store, own_table):
    now = _fresh_now()
    error = JobError("X", "judged", ErrorStage.RECONCILE)
    job_id = new_job_id("pinned")
    assert store.record_received(job_id, now)
    assert store.claim_submission(job_id, "t-up", "h", "grid-1", None, {}, now, stage=JobStage.UPSCALE)

    # The upscale's submission had no task recorded (ambiguous); its webhook named the task since.
    assert store.record_final_signal(job_id, "task-up", now, JobStage.UPSCALE)
    assert not store.mark_failed(job_id, error, now, JudgedStage(JobStage.UPSCALE, claim="t-up")), "it has a task now"
    # The chain moved on: its upscale's task, its upscale's claim, a between-stages view of the upscale.
    assert store.advance_stage(job_id, JobStage.UPSCALE, "task-up", JobStage.INPAINT, now)
    for stale in (
        JudgedStage(JobStage.UPSCALE, "task-up"),
        JudgedStage(JobStage.UPSCALE, "task-up", claim="t-up"),
        JudgedStage(JobStage.UPSCALE, claim="t-up"),
        JudgedStage(JobStage.UPSCALE),
        JudgedStage(JobStage.INPAINT, claim="t-up"),  # the upscale's claim is no claim of the inpaint
    ):
        assert not store.mark_failed(job_id, error, now, stale), stale
    # The inpaint claimed, then given back (the provider never took it), then won by another delivery.
    assert store.claim_submission(job_id, "t-in-1", "h", None, None, {}, now, stage=JobStage.INPAINT, first=False)
    assert store.release_claim(job_id, "t-in-1", now, first=False)
    assert store.claim_submission(job_id, "t-in-2", "h", None, None, {}, now, stage=JobStage.INPAINT, first=False)
    assert not store.mark_failed(job_id, error, now, JudgedStage(JobStage.INPAINT)), "claimed: not between stages"
    assert not store.mark_failed(job_id, error, now, JudgedStage(JobStage.INPAINT, claim="t-in-1")), "another claim"

    assert job_item(own_table, job_id)["status"] == "PROCESSING"
    assert store.mark_failed(job_id, error, now, JudgedStage(JobStage.INPAINT, claim="t-in-2"))


def test_a_stage_that_moves_on_drops_the_ambiguity_flag_of_the_stage_before(store, own_table):
    now = _fresh_now()
    job_id = new_job_id("ambiguous-upscale")
    assert store.record_received(job_id, now)
    assert store.claim_submission(job_id, "t-up", "h", "grid-1", None, {}, now, stage=JobStage.UPSCALE)
    ambiguous = JobError("SUBMIT_AMBIGUOUS", "the answer was lost", ErrorStage.SUBMIT)
    assert store.mark_submit_ambiguous(job_id, "t-up", ambiguous, now)
    assert job_item(own_table, job_id)["needs_attention"] is True

    # Its webhook arrived after all: the upscale exists, finished, and the chain moves on to its inpaint.
    assert store.record_final_signal(job_id, "task-up", now, JobStage.UPSCALE)
    assert store.advance_stage(job_id, JobStage.UPSCALE, "task-up", JobStage.INPAINT, now)

    item = job_item(own_table, job_id)
    assert item["stage"] == "inpaint"
    assert "needs_attention" not in item and "error" not in item
    job = store.get(job_id)
    assert job is not None and not job.needs_attention and job.error is None


def _losing_the_first_answer(operation: str) -> tuple[Any, list[int]]:
    """A table whose client applies the first `operation` for real, then loses its answer (a read
    time-out), so botocore sends the same request again, as it would in Lambda."""
    table = boto3.resource("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    lost: list[int] = []

    def apply_then_lose(request: Any, **_: Any) -> None:
        if lost:
            return None  # the retry goes through as usual
        lost.append(URLLib3Session().send(request).status_code)
        raise ReadTimeoutError(endpoint_url=request.url)

    table.meta.client.meta.events.register(f"before-send.dynamodb.{operation}", apply_then_lose)
    return table, lost


@pytest.mark.parametrize(
    ("operation", "end"),
    [("UpdateItem", "reject"), ("TransactWriteItems", "fail")],
    ids=["plain-update", "transaction"],
)
def test_a_final_write_whose_answer_was_lost_is_won_and_its_error_json_written(store, own_table, files, operation, end):
    now = _fresh_now()
    job_id = new_job_id(f"lost-answer-{end}")
    assert store.record_received(job_id, now)
    slots = store.slots_in_use()
    if end == "fail":  # a claimed job, holding a provider slot: its failure is one transaction
        assert store.claim_submission(job_id, "t1", "h", "parent-1", None, {}, now)
    resource, lost = _losing_the_first_answer(operation)
    lossy = JobTable(resource.Table(own_table.name), max_active_tasks=1000, budget=POLICY)
    ends = JobEndings(lossy, files, "results/", lambda: now)

    if end == "reject":
        won = ends.reject(job_id, JobError("MASK_BLANK", "all black", ErrorStage.INTAKE))
    else:
        refused = JobError("PROVIDER_REJECTED", "no", ErrorStage.SUBMIT)
        won = ends.fail(job_id, refused, JudgedStage(JobStage.INPAINT, claim="t1"), open_stage_paid=False)

    assert lost == [200], "the first attempt was applied and its answer lost"
    assert won, "the write's own first attempt is no lost race"
    status = "REJECTED" if end == "reject" else "FAILED"
    assert job_item(own_table, job_id)["status"] == status
    assert read_json(boto3.client("s3"), files.bucket, f"results/{job_id}/error.json")["status"] == status
    assert store.slots_in_use() == slots, "the slot went back once"
