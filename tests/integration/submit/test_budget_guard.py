"""Given a daily credit limit, when bursts of jobs, chains and failing tasks go through the submitter
(moto server, the simulator, the stack's webhook and completion functions), then exactly as many paid
submissions are made as the limit allows, with `reject` and with `hold`; held jobs go out when the
period turns (an injected clock); a chain that does not fit pays nothing; a failed task's credits
come back; duplicate deliveries never reserve twice; and a provider balance too low holds a job.

The submitter is driven directly, like test_exactly_once's: its inbox is a prefix the stack's S3
notifications ignore, and its clock is set to days no other test reserves in, so each test's
ledger starts empty. What happens after the submission (webhooks, completion) is the stack's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from vary_region.aws.job_files import JobFiles, StoredObject
from vary_region.core.credits import periods_at
from vary_region.provider.balance import ProviderBalance
from vary_region.settings import Settings, get_settings
from vary_region.store.job_table import JobTable
from vary_region.submit.submitter import JobSubmitter, SubmitOutcome, SubmitResult
from vary_region.wiring import apiframe_client, free_calls_client, parent_reader, provider_slot_limit
from vary_region_cli.config import Target
from vary_region_cli.usage import held_for_credits

from tests.support.builders import job_json, mask_png, new_job_id, put_files
from tests.support.recorders import HoldRecorder, ProviderRecorder
from tests.support.waits import (
    get_job,
    job_item,
    keys_under,
    read_error_json,
    read_json,
    settle_stack,
    wait_for_job,
    wait_until,
)

DIRECT_INBOX = "budget-inbox/"  # not under the stack's notification prefix (inbox/)
INPAINT = 4  # credits, the default price list
_days_ahead = iter(range(1, 100_000))


class Clock:
    """Now, moved to a day of the test's own (a month ahead of every other test's), and movable."""

    def __init__(self) -> None:
        self.offset = timedelta(days=400 + next(_days_ahead) * 40)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def next_day(self) -> None:
        now = self()
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=5, microsecond=0)
        self.offset += tomorrow - now


@pytest.fixture()
def settings(stack: Any, sim: Any) -> Settings:
    settle_stack(stack, sim)
    return replace(get_settings(), inbox_prefix=DIRECT_INBOX)


def _submitter(settings: Settings, clock: Clock, holds: HoldRecorder | None, **budget: Any) -> JobSubmitter:
    settings = replace(settings, **budget)
    table = boto3.resource("dynamodb").Table(settings.jobs_table)
    store = JobTable(table, max_active_tasks=provider_slot_limit(settings), budget=settings.budget_policy)
    files = JobFiles(boto3.client("s3"), settings.jobs_bucket, DIRECT_INBOX)
    balance = ProviderBalance(free_calls_client(settings).account_credits, settings.balance_cache_seconds)
    return JobSubmitter(
        settings, store, files, apiframe_client(settings), parent_reader(settings), clock, holds, balance=balance
    )


def _upload(s3: Any, bucket: str, job_id: str, spec: bytes | None = None) -> str:
    key = f"{DIRECT_INBOX}{job_id}/job.json"
    put_files(s3, bucket, [(f"{DIRECT_INBOX}{job_id}/mask.png", mask_png(), "image/png")])
    put_files(s3, bucket, [(key, spec or job_json(), "application/json")])
    return key


def _usage(submitter: JobSubmitter, clock: Clock) -> dict[str, tuple[int, int]]:
    usage = submitter._store.credit_usage(periods_at(clock()))
    return {str(u.period.kind): (u.reserved, u.spent) for u in usage}


def _burst(submitter: JobSubmitter, keys: list[str]) -> list[SubmitResult]:
    with ThreadPoolExecutor(max_workers=len(keys)) as pool:
        return list(pool.map(submitter.handle_upload, keys))


@pytest.mark.parametrize("over_budget", ["reject", "hold"])
def test_a_burst_against_a_small_daily_limit_makes_exactly_as_many_paid_submissions_as_it_allows(
    settings, sim, s3, table, bucket, monkeypatch, over_budget
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    clock, holds = Clock(), HoldRecorder()
    submitter = _submitter(settings, clock, holds, daily_credit_limit=3 * INPAINT, over_budget=over_budget)
    jobs = [new_job_id(f"burst-{over_budget}") for _ in range(8)]
    keys = [_upload(s3, bucket, job_id) for job_id in jobs]

    results = _burst(submitter, keys)
    _burst(submitter, keys)  # every upload delivered again: nothing more is paid or reserved

    submitted = [r.job_id for r in results if r.outcome is SubmitOutcome.SUBMITTED]
    others = [job_id for job_id in jobs if job_id not in submitted]
    assert len(submitted) == 3, [r.outcome for r in results]
    assert sum(provider.inpaint_calls(job_id, status=200) for job_id in jobs) == 3
    assert all(provider.inpaint_calls(job_id) == 0 for job_id in others), "an over-budget job pays nothing"
    assert _usage(submitter, clock)["day"][0] == 3 * INPAINT
    for job_id in submitted:
        assert job_id is not None, "a submitted upload names its job"
        assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"
    wait_for_spent = [read_json(s3, bucket, f"results/{job_id}/result.json")["credits"] for job_id in submitted]
    assert wait_for_spent == [{"reserved": {"inpaint": 4}, "spent": {"inpaint": 4}, "returned": 0}] * 3
    assert _usage(submitter, clock)["day"] == (3 * INPAINT, 3 * INPAINT)
    for job_id in others:
        item = job_item(table, job_id)
        if over_budget == "reject":
            assert item["status"] == "REJECTED" and item["error"]["code"] == "BUDGET_EXCEEDED"
            error = read_error_json(s3, bucket, job_id)
            assert error["error"]["code"] == "BUDGET_EXCEEDED" and "limit of 12" in error["error"]["message"]
            assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/error.json"]
        else:
            assert item["status"] == "RECEIVED" and item["held_reason"] == "BUDGET_EXCEEDED", item
            assert item["credits_needed"] == INPAINT
    if over_budget == "hold":
        assert {key for key, _ in holds.held} == {f"{DIRECT_INBOX}{job_id}/job.json" for job_id in others}
        assert all(delay is not None and delay > settings.hold_delay_seconds for _, delay in holds.held)
        _drain_held(submitter, clock, table, others)


def _drain_held(submitter: JobSubmitter, clock: Clock, table: Any, jobs: list[str]) -> None:
    """Day after day, the held jobs go out, as many per day as the limit allows, until none is left."""
    waiting = list(jobs)
    while waiting:
        clock.next_day()
        results = _burst(submitter, [f"{DIRECT_INBOX}{job_id}/job.json" for job_id in waiting])
        went = [r.job_id for r in results if r.outcome is SubmitOutcome.SUBMITTED]
        assert len(went) == min(3, len(waiting)), [r.outcome for r in results]
        waiting = [job_id for job_id in waiting if job_id not in went]
    for job_id in jobs:
        assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"


def _cli_target(stack: Any) -> Target:
    """What `vary-region usage` talks to: the stack's table, as the CLI reaches it."""
    info = stack.info
    return Target(info.bucket, info.table, info.aws_endpoint_url, info.region, None, local=True)


def test_held_jobs_go_out_when_the_period_turns_and_their_wake_ups_read_no_files(
    stack, settings, sim, s3, table, bucket, monkeypatch
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    clock, holds = Clock(), HoldRecorder()
    submitter = _submitter(settings, clock, holds, daily_credit_limit=INPAINT)
    first, held = new_job_id("paid-today"), new_job_id("held-till-tomorrow")
    keys = {job_id: _upload(s3, bucket, job_id) for job_id in (first, held)}
    assert submitter.handle_upload(keys[first]).outcome is SubmitOutcome.SUBMITTED
    assert submitter.handle_upload(keys[held]).outcome is SubmitOutcome.HELD
    reads: list[str] = []
    real_read = submitter._files.read

    def recording_read(key: str, max_bytes: int) -> StoredObject | None:
        reads.append(key)
        return real_read(key, max_bytes)

    monkeypatch.setattr(submitter._files, "read", recording_read)

    again = [submitter.handle_upload(keys[held]) for _ in range(3)]  # wake-ups the same day

    assert [r.outcome for r in again] == [SubmitOutcome.HELD] * 3
    assert reads == [], "a wake-up while the day has no room reads neither job.json nor the mask"
    assert provider.inpaint_calls(held) == 0
    listed = [job for job in held_for_credits(_cli_target(stack)) if job.job_id == held]
    assert [(job.reason, job.credits) for job in listed] == [("BUDGET_EXCEEDED", INPAINT)], "vary-region usage"

    clock.next_day()
    woken = submitter.handle_upload(keys[held])

    assert woken.outcome is SubmitOutcome.SUBMITTED and provider.inpaint_calls(held, status=200) == 1
    assert wait_for_job(table, held, timeout=30)["status"] == "COMPLETED"
    assert _usage(submitter, clock)["day"] == (INPAINT, INPAINT), "the new day carries only the held job"


def _chain_spec() -> bytes:
    document = {
        "imagine": {"prompt": "a lighthouse", "index": 2, "aspect_ratio": "3:2"},
        "prompt": "a red balloon",
        "mask": {"regions": [{"rect": [0.25, 0.25, 0.5, 0.5]}], "units": "fraction"},
    }
    return json.dumps(document).encode()


def _upload_inline(s3: Any, bucket: str, job_id: str, spec: bytes) -> str:
    key = f"{DIRECT_INBOX}{job_id}.json"
    put_files(s3, bucket, [(key, spec, "application/json")])
    return key


@pytest.mark.parametrize("over_budget", ["reject", "hold"])
def test_a_chain_whose_total_exceeds_what_is_left_pays_nothing(
    settings, sim, s3, table, bucket, monkeypatch, over_budget
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    clock = Clock()
    submitter = _submitter(settings, clock, HoldRecorder(), daily_credit_limit=12, over_budget=over_budget)
    plain, chain = new_job_id("plain"), new_job_id("chain")
    assert submitter.handle_upload(_upload(s3, bucket, plain)).outcome is SubmitOutcome.SUBMITTED  # 8 left

    result = submitter.handle_upload(_upload_inline(s3, bucket, chain, _chain_spec()))  # needs 4 + 2 + 4

    expected = SubmitOutcome.REJECTED if over_budget == "reject" else SubmitOutcome.HELD
    assert result.outcome is expected
    assert provider.stage_calls(chain, "imagine") == 0
    assert _usage(submitter, clock)["day"][0] == INPAINT
    wait_for_job(table, plain, timeout=30)


def test_a_chain_dearer_than_the_whole_limit_is_rejected_even_under_hold(settings, sim, s3, table, bucket, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    clock = Clock()
    submitter = _submitter(settings, clock, HoldRecorder(), daily_credit_limit=8, over_budget="hold")
    chain = new_job_id("dear-chain")

    result = submitter.handle_upload(_upload_inline(s3, bucket, chain, _chain_spec()))

    assert result.outcome is SubmitOutcome.REJECTED
    error = read_error_json(s3, bucket, chain)["error"]
    assert error["code"] == "BUDGET_EXCEEDED" and "more than the whole daily limit of 8" in error["message"]
    assert provider.stage_calls(chain, "imagine") == 0
    assert _usage(submitter, clock)["day"] == (0, 0)


def test_a_failed_task_gives_its_credits_back_to_the_day(settings, sim, s3, table, bucket, monkeypatch):
    clock = Clock()
    submitter = _submitter(settings, clock, HoldRecorder(), daily_credit_limit=INPAINT)
    failing, next_one = new_job_id("fails"), new_job_id("after-the-refund")
    sim.set_faults(fail_task="simulated provider failure")
    assert submitter.handle_upload(_upload(s3, bucket, failing)).outcome is SubmitOutcome.SUBMITTED
    sim.set_faults(fail_task=None)

    item = wait_for_job(table, failing, timeout=30)

    assert item["status"] == "FAILED" and item["error"]["code"] == "PROVIDER_TASK_FAILED"
    assert item["credits_returned"] == INPAINT and item["credits_spent"] == {}
    assert _usage(submitter, clock)["day"] == (0, 0)
    assert submitter.handle_upload(_upload(s3, bucket, next_one)).outcome is SubmitOutcome.SUBMITTED
    wait_for_job(table, next_one, timeout=30)


def test_a_submission_the_provider_turned_away_gives_its_reservation_back(settings, sim, s3, table, bucket):
    clock, holds = Clock(), HoldRecorder()
    submitter = _submitter(settings, clock, holds, daily_credit_limit=INPAINT, submit_retry_budget_seconds=0.5)
    job_id = new_job_id("turned-away")
    sim.set_faults(rate_limit_next=1000)  # 429 past the retry budget: certainly not accepted
    try:
        assert submitter.handle_upload(_upload(s3, bucket, job_id)).outcome is SubmitOutcome.HELD
    finally:
        sim.set_faults(rate_limit_next=0)

    assert _usage(submitter, clock)["day"] == (0, 0)
    assert "credits_reserved" not in job_item(table, job_id)
    assert submitter.handle_upload(f"{DIRECT_INBOX}{job_id}/job.json").outcome is SubmitOutcome.SUBMITTED
    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"


def test_a_provider_balance_too_low_holds_the_job_and_it_goes_once_topped_up(
    settings, sim, s3, table, bucket, monkeypatch
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    clock, holds = Clock(), HoldRecorder()
    submitter = _submitter(settings, clock, holds, balance_cache_seconds=1)
    job_id = new_job_id("low-balance")
    sim.set_faults(account_credits=3)  # an inpaint costs 4

    result = submitter.handle_upload(_upload(s3, bucket, job_id))

    item = job_item(table, job_id)
    assert result.outcome is SubmitOutcome.HELD and item["held_reason"] == "PROVIDER_BALANCE_LOW", item
    assert provider.inpaint_calls(job_id) == 0
    sim.set_faults(account_credits=10_000)
    monkeypatch.setattr(submitter._balance, "_read_at", None)  # the cached figure has aged out

    assert submitter.handle_upload(f"{DIRECT_INBOX}{job_id}/job.json").outcome is SubmitOutcome.SUBMITTED
    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"


def test_an_unreadable_balance_does_not_stop_jobs(settings, sim, s3, table, bucket):
    clock = Clock()
    submitter = _submitter(settings, clock, HoldRecorder(), balance_cache_seconds=60)
    job_id = new_job_id("balance-unknown")
    sim.set_faults(account_status=500)

    assert submitter.handle_upload(_upload(s3, bucket, job_id)).outcome is SubmitOutcome.SUBMITTED
    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"


@pytest.mark.v1_only  # v1's price list (v2's is proved in tests/e2e/test_apiframe_v2.py)
def test_the_simulator_balance_falls_as_tasks_are_accepted(settings, sim):
    api = free_calls_client(settings)
    before = api.account_credits()
    assert before is not None
    task = apiframe_client(settings)
    from vary_region.provider.apiframe_v1 import ImagineRequest

    task.submit(ImagineRequest("a lighthouse", "1:1", None, None))

    assert api.account_credits() == before - 4


def test_a_later_stage_the_provider_turns_away_ends_the_chain_and_gives_back_only_that_stage(
    settings, sim, s3, table, bucket
):
    """The inpaint of a grid -> upscale -> inpaint chain is refused (400): the job FAILED at once, the
    upscale stays spent, the inpaint's credits go back."""
    clock = Clock()
    submitter = _submitter(settings, clock, HoldRecorder(), daily_credit_limit=100)
    job_id = new_job_id("later-refused")
    spec = {
        "parent_task_id": f"grid-{job_id}",
        "index": 2,
        "prompt": "a red balloon",
        "mask": {"regions": [{"rect": [0.25, 0.25, 0.5, 0.5]}], "units": "fraction"},
    }
    key = _upload_inline(s3, bucket, job_id, json.dumps(spec).encode())
    assert submitter.handle_upload(key).outcome is SubmitOutcome.SUBMITTED  # the upscale
    # The stack's completion confirms the upscale and moves the job on to its inpaint stage.
    wait_for_job(table, job_id, statuses=("PROCESSING",), timeout=30)
    wait_until(lambda: job_item(table, job_id).get("stage") == "inpaint", 30, message="the inpaint stage open")
    sim.set_faults(reject_inpaint="the mask is not accepted")
    try:
        result = submitter.handle_upload(key)  # the hand-over to the inpaint stage
    finally:
        sim.set_faults(reject_inpaint=None)

    item = job_item(table, job_id)
    assert result.outcome is SubmitOutcome.FAILED and item["status"] == "FAILED", item
    assert item["error"]["code"] == "PROVIDER_REJECTED"
    assert read_error_json(s3, bucket, job_id)["status"] == "FAILED"
    assert item["credits_spent"] == {"upscale": 2} and item["credits_returned"] == 4
    assert _usage(submitter, clock)["day"] == (2, 2)
    assert "holds_slot" not in item, "its provider slot is back"


def test_a_held_job_whose_limit_was_lowered_below_its_cost_is_rejected(settings, sim, s3, table, bucket):
    clock, holds = Clock(), HoldRecorder()
    submitter = _submitter(settings, clock, holds, daily_credit_limit=12)
    first, chain = new_job_id("fills-the-day"), new_job_id("held-chain")
    assert submitter.handle_upload(_upload(s3, bucket, first)).outcome is SubmitOutcome.SUBMITTED  # 8 left
    key = _upload_inline(s3, bucket, chain, _chain_spec())
    assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD  # needs 10
    # The owner lowers the limit below what the chain costs: waiting would never end.
    lowered = _submitter(settings, clock, holds, daily_credit_limit=8)

    result = lowered.handle_upload(key)

    assert result.outcome is SubmitOutcome.REJECTED
    assert job_item(table, chain)["error"]["code"] == "BUDGET_EXCEEDED"
    wait_for_job(table, first, timeout=30)


# --- what a held job says: why, and until when ------------------------------------------------------


def _clock_on(moment: datetime) -> Clock:
    """A clock at `moment`: centuries past every other test's clock, so its month's ledger is its own."""
    clock = Clock()
    clock.offset = moment - datetime.now(UTC)
    return clock


def _cli(stack: Any, *args: str) -> tuple[int, str, str]:
    """`vary-region ARGS` against the stack's table, as a user runs it (it reads the real clock)."""
    info = stack.info
    where = ["--bucket", info.bucket, "--table", info.table, "--endpoint-url", info.aws_endpoint_url]
    command = [sys.executable, "-m", "vary_region_cli.main", *where, "--region", info.region, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout, done.stderr


BUDGET_WORDS = "held: the daily or monthly credit limit has no room left for its chain (BUDGET_EXCEEDED)"


def test_a_budget_held_job_says_until_the_next_day_and_status_and_watch_tell_it(
    stack, settings, sim, s3, table, bucket
):
    clock, holds = _clock_on(datetime(2901, 3, 10, 12, 0, tzinfo=UTC)), HoldRecorder()
    submitter = _submitter(settings, clock, holds, daily_credit_limit=INPAINT)
    first, held = new_job_id("fills-the-day"), new_job_id("held-till-tomorrow")
    assert submitter.handle_upload(_upload(s3, bucket, first)).outcome is SubmitOutcome.SUBMITTED
    key = _upload(s3, bucket, held)

    assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD

    item = job_item(table, held)
    assert (item.get("held_reason"), item.get("held_until")) == ("BUDGET_EXCEEDED", "2901-03-11T00:00:00.000Z")
    code, out, err = _cli(stack, "status", held)
    assert code == 0 and json.loads(out).get("held_until") == "2901-03-11T00:00:00.000Z"
    assert f"is RECEIVED: {BUDGET_WORDS}; until 2901-03-11T00:00:00Z, when the next UTC day's budget opens" in err
    code, out, _ = _cli(stack, "watch", held, "--timeout", "0.3", "--interval", "0.1")
    line, timed_out = out.splitlines()
    assert code == 2 and "RECEIVED  " in line and f"({BUDGET_WORDS}; until 2901-03-11T00:00:00Z" in line
    assert f"is still RECEIVED, {BUDGET_WORDS}; until 2901-03-11T00:00:00Z" in timed_out
    _, out, _ = _cli(stack, "usage")
    assert any(line.startswith(f"{held} ") and line.endswith("2901-03-11 00:00:00") for line in out.splitlines()), out

    written = item["updated_at"]
    assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD  # a wake-up the same day: nothing written
    assert job_item(table, held)["updated_at"] == written

    clock.next_day()  # another job takes the new day's room before the held one wakes
    assert submitter.handle_upload(_upload(s3, bucket, new_job_id("fills-day-two"))).outcome is SubmitOutcome.SUBMITTED
    assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD
    assert job_item(table, held).get("held_until") == "2901-03-12T00:00:00.000Z", "a new day, still full"

    clock.next_day()
    assert submitter.handle_upload(key).outcome is SubmitOutcome.SUBMITTED
    done = wait_for_job(table, held, timeout=30)
    assert done["status"] == "COMPLETED" and "held_until" not in done and "held_at" not in done


@pytest.mark.parametrize(
    ("daily", "monthly", "until", "period"),
    [
        (INPAINT, 10 * INPAINT, "2902-05-11T00:00:00.000Z", "day"),  # the day is full, the month is not
        (0, INPAINT, "2903-06-01T00:00:00.000Z", "month"),
        (INPAINT, INPAINT, "2904-07-01T00:00:00.000Z", "month"),  # both full: the day's turn would not do
    ],
    ids=["day-full", "month-full", "both-full"],
)
def test_a_budget_held_job_waits_until_the_full_period_that_opens_last(
    stack, settings, sim, s3, table, bucket, daily, monthly, until, period
):
    year, month = int(until[:4]), int(until[5:7]) - (period == "month")
    clock, holds = _clock_on(datetime(year, month, 10, 12, 0, tzinfo=UTC)), HoldRecorder()
    submitter = _submitter(settings, clock, holds, daily_credit_limit=daily, monthly_credit_limit=monthly)
    first, held = new_job_id("fills-the-period"), new_job_id("held")
    assert submitter.handle_upload(_upload(s3, bucket, first)).outcome is SubmitOutcome.SUBMITTED
    key = _upload(s3, bucket, held)

    assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD

    item = job_item(table, held)
    assert (item.get("held_reason"), item.get("held_until")) == ("BUDGET_EXCEEDED", until)
    _, _, err = _cli(stack, "status", held)
    assert f"{BUDGET_WORDS}; until {until[:19]}Z, when the next UTC {period}'s budget opens" in err
    if period == "month":  # the day turns, the month is still full: the job stays held, nothing is written
        clock.next_day()
        assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD
        assert get_job(table, held) == item
    wait_for_job(table, first, timeout=30)
