"""Given the credit ledger on a table of the test's own (moto server), when jobs reserve, spend and give
back credits in every way the pipeline does, then a period's limit is never overshot, not by any number
of concurrent claims, a reservation is made once per job and settled once, and what a job did not
spend goes back to the day and the month it was reserved in."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vary_region.core.credits import (
    BudgetPolicy,
    CreditReservation,
    OverBudget,
    Period,
    PeriodKind,
    all_spent,
    none_spent,
    periods_at,
    reserve,
    settle,
)
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.stages import JobStage, stages_from
from vary_region.store.job_table import JobTable, JudgedStage

from tests.support.builders import new_job_id
from tests.support.waits import job_item

pytestmark = pytest.mark.generation_blind

PRICES = {JobStage.IMAGINE: 4, JobStage.UPSCALE: 2, JobStage.INPAINT: 4}
_day_offset = iter(range(1, 10_000))


def _fresh_now() -> datetime:
    """A day no other test of the module reserved in: each test's periods start empty."""
    return datetime(2030, 1, 1, 12, 0, tzinfo=UTC) + timedelta(days=next(_day_offset) * 40)


def _store(table: Any, **policy: Any) -> JobTable:
    return JobTable(table, max_active_tasks=1000, budget=BudgetPolicy(**policy))


def _reservation(token: str, now: datetime, first: JobStage = JobStage.INPAINT) -> CreditReservation:
    return reserve(stages_from(first), PRICES.__getitem__, now, token)


def _claim(store: JobTable, job_id: str, token: str, now: datetime, first: JobStage = JobStage.INPAINT) -> bool:
    return store.claim_submission(
        job_id, token, "hash", "parent-1", None, {}, now, stage=first, reservation=_reservation(token, now, first)
    )


def _judged(claim: str) -> JudgedStage:
    """A chain from a prompt, failed on its imagine's claim (what the ledger does is what is tested)."""
    return JudgedStage(JobStage.IMAGINE, claim=claim)


def _usage(store: JobTable, now: datetime) -> dict[str, tuple[int, int]]:
    return {str(u.period.kind): (u.reserved, u.spent) for u in store.credit_usage(periods_at(now))}


def test_the_first_claim_reserves_the_whole_chain_in_the_day_and_the_month(own_table):
    store, now = _store(own_table, daily_limit=100), _fresh_now()
    job_id = new_job_id("chain")
    store.record_received(job_id, now)

    assert _claim(store, job_id, "t1", now, JobStage.IMAGINE)

    item = job_item(own_table, job_id)
    assert item["credits_reserved"] == {"imagine": 4, "upscale": 2, "inpaint": 4}
    assert (item["credit_day"], item["credit_month"]) == (now.strftime("%Y-%m-%d"), now.strftime("%Y-%m"))
    assert _usage(store, now) == {"day": (10, 0), "month": (10, 0)}


def test_duplicate_deliveries_never_reserve_twice(own_table):
    store, now = _store(own_table, daily_limit=100), _fresh_now()
    job_id = new_job_id("dup")
    store.record_received(job_id, now)

    assert _claim(store, job_id, "t1", now)
    assert not _claim(store, job_id, "t2", now)
    assert not _claim(store, job_id, "t3", now)

    assert _usage(store, now)["day"] == (4, 0)


@pytest.mark.parametrize("limit_kind", ["daily_limit", "monthly_limit"])
def test_concurrent_claims_never_overshoot_a_limit_by_even_one_task(own_table, limit_kind):
    store, now = _store(own_table, **{limit_kind: 5 * 4}), _fresh_now()  # room for five inpaints
    jobs = [new_job_id("burst") for _ in range(16)]
    for job_id in jobs:
        store.record_received(job_id, now)

    def claim(job_id: str) -> str:
        try:
            return "claimed" if _claim(store, job_id, f"token-{job_id}", now) else "lost"
        except OverBudget:
            return "over"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(claim, jobs))

    assert outcomes.count("claimed") == 5 and outcomes.count("over") == 11, outcomes
    kind = "day" if limit_kind == "daily_limit" else "month"
    assert _usage(store, now)[kind] == (20, 0)
    over = [job_id for job_id, outcome in zip(jobs, outcomes, strict=True) if outcome == "over"]
    assert all("submit_claim" not in job_item(own_table, job_id) for job_id in over), "over budget: unclaimed"


def test_a_chain_that_does_not_fit_in_what_is_left_reserves_nothing(own_table):
    store, now = _store(own_table, daily_limit=12), _fresh_now()
    plain, chain = new_job_id("plain"), new_job_id("chain")
    for job_id in (plain, chain):
        store.record_received(job_id, now)
    assert _claim(store, plain, "t-plain", now)  # 8 left

    with pytest.raises(OverBudget) as over:
        _claim(store, chain, "t-chain", now, JobStage.IMAGINE)  # needs 10

    assert over.value.fits_ever and over.value.period == Period(PeriodKind.DAY, now.strftime("%Y-%m-%d"))
    assert _usage(store, now)["day"] == (4, 0)
    assert "submit_claim" not in job_item(own_table, chain)


def test_a_chain_dearer_than_the_limit_itself_can_never_fit(own_table):
    store, now = _store(own_table, monthly_limit=8), _fresh_now()
    job_id = new_job_id("dear")
    store.record_received(job_id, now)

    with pytest.raises(OverBudget) as over:
        _claim(store, job_id, "t1", now, JobStage.IMAGINE)

    assert not over.value.fits_ever and "monthly limit of 8" in str(over.value)
    assert _usage(store, now)["month"] == (0, 0)


def test_a_claim_given_back_gives_its_credits_back(own_table):
    store, now = _store(own_table, daily_limit=4), _fresh_now()
    job_id, other = new_job_id("given-back"), new_job_id("next")
    for each in (job_id, other):
        store.record_received(each, now)
    assert _claim(store, job_id, "t1", now)

    assert store.release_claim(job_id, "t1", now, returned=none_spent(_reservation("t1", now)))

    assert _usage(store, now)["day"] == (0, 0)
    assert "credits_reserved" not in job_item(own_table, job_id)
    assert _claim(store, other, "t2", now), "the room is there for the next job"


def test_a_completed_job_counts_its_reservation_as_spent(own_table):
    store, now = _store(own_table, daily_limit=100), _fresh_now()
    job_id = new_job_id("done")
    store.record_received(job_id, now)
    assert _claim(store, job_id, "t1", now)
    assert store.mark_submitted(job_id, "t1", "task-1", now)
    job = store.get(job_id)
    assert job is not None and job.reservation == _reservation("t1", now)

    assert store.mark_completed(job_id, "task-1", {}, now, all_spent(job.reservation))
    assert not store.mark_completed(job_id, "task-1", {}, now, all_spent(job.reservation)), "settled once"

    item = job_item(own_table, job_id)
    assert item["credits_spent"] == {"inpaint": 4} and item["credits_returned"] == 0
    assert _usage(store, now) == {"day": (4, 4), "month": (4, 4)}


@pytest.mark.parametrize(
    ("return_failed", "usage", "spent"),
    [(True, (6, 6), {"imagine": 4, "upscale": 2}), (False, (10, 10), {"imagine": 4, "upscale": 2, "inpaint": 4})],
    ids=["returned", "kept"],
)
def test_a_task_the_provider_failed_gives_its_credits_back_when_the_policy_says_so(
    own_table, return_failed, usage, spent
):
    policy = BudgetPolicy(daily_limit=100, return_failed_credits=return_failed)
    store, now = JobTable(own_table, max_active_tasks=1000, budget=policy), _fresh_now()
    job_id = new_job_id("failed")
    store.record_received(job_id, now)
    assert _claim(store, job_id, "t1", now, JobStage.IMAGINE)
    reservation = _reservation("t1", now, JobStage.IMAGINE)

    # The imagine and the upscale went through; the inpaint's task failed at the provider.
    settlement = settle(reservation, JobStage.INPAINT, open_stage_paid=True, provider_failed=True, policy=policy)
    assert store.mark_failed(
        job_id, JobError("PROVIDER_TASK_FAILED", "no", ErrorStage.PROVIDER), now, _judged("t1"), settlement=settlement
    )

    assert _usage(store, now)["day"] == usage
    assert job_item(own_table, job_id)["credits_spent"] == spent


def test_a_chain_that_fails_before_a_stage_is_sent_gives_back_that_stage_and_the_rest(own_table):
    policy = BudgetPolicy(daily_limit=100)
    store, now = JobTable(own_table, max_active_tasks=1000, budget=policy), _fresh_now()
    job_id = new_job_id("early")
    store.record_received(job_id, now)
    assert _claim(store, job_id, "t1", now, JobStage.IMAGINE)
    reservation = _reservation("t1", now, JobStage.IMAGINE)

    settlement = settle(reservation, JobStage.UPSCALE, open_stage_paid=False, policy=policy)
    assert store.mark_failed(
        job_id, JobError("JOB_FILES_MISSING", "gone", ErrorStage.INTAKE), now, _judged("t1"), settlement=settlement
    )

    assert _usage(store, now)["day"] == (4, 4)
    assert job_item(own_table, job_id)["credits_returned"] == 6


def test_a_settlement_of_another_reservation_changes_nothing(own_table):
    """A stale view of the job (its claim given back and won again since) must not settle the new one."""
    store, now = _store(own_table, daily_limit=100), _fresh_now()
    job_id = new_job_id("stale")
    store.record_received(job_id, now)
    assert _claim(store, job_id, "t1", now)
    stale = _reservation("t1", now)
    assert store.release_claim(job_id, "t1", now, returned=none_spent(stale))
    assert _claim(store, job_id, "t2", now)

    error = JobError("PROVIDER_REJECTED", "no", ErrorStage.SUBMIT)
    assert not store.mark_failed(
        job_id, error, now, JudgedStage(JobStage.INPAINT, claim="t2"), settlement=none_spent(stale)
    )

    assert _usage(store, now)["day"] == (4, 0)
    assert job_item(own_table, job_id)["status"] == "RECEIVED"
