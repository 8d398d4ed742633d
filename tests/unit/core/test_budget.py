"""The budget guard's arithmetic: UTC periods, what a chain reserves, what a settlement keeps and gives
back, the settings that drive it, and the cached provider balance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from vary_region.core.credits import (
    BudgetPolicy,
    OverBudgetAction,
    Period,
    PeriodKind,
    all_spent,
    none_spent,
    periods_at,
    reserve,
    settle,
)
from vary_region.core.errors import ProviderUnavailable
from vary_region.core.stages import JobStage, stages_from
from vary_region.provider.balance import ProviderBalance
from vary_region.settings import Settings, SettingsError
from vary_region.store.credit_ledger import period_usage, reservation_requests, settlement_requests
from vary_region.store.items import reservation_fields, reservation_from_item, settlement_fields

PRICES = {JobStage.IMAGINE: 4, JobStage.UPSCALE: 2, JobStage.INPAINT: 4}
NOW = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
REQUIRED = {"JOBS_BUCKET": "b", "JOBS_TABLE": "t"}


def test_periods_are_utc_days_and_months_and_know_when_the_next_one_opens():
    day, month = periods_at(NOW.astimezone(timezone(timedelta(hours=-5))))  # the same moment, elsewhere

    assert (day.name, month.name) == ("2026-12-31", "2026-12")
    assert day.next_opens == datetime(2027, 1, 1, tzinfo=UTC) == month.next_opens
    assert Period(PeriodKind.MONTH, "2027-01").next_opens == datetime(2027, 2, 1, tzinfo=UTC)
    assert Period(PeriodKind.MONTH, "2028-02").next_opens == datetime(2028, 3, 1, tzinfo=UTC)
    assert day.key == "/credits/day/2026-12-31", "no job id contains a slash"


def test_a_chain_reserves_every_stage_from_its_first():
    chain = reserve(stages_from(JobStage.IMAGINE), PRICES.__getitem__, NOW, "token")
    plain = reserve(stages_from(JobStage.INPAINT), PRICES.__getitem__, NOW, "token")

    assert chain.total == 10 and [stage for stage, _ in chain.credits] == list(stages_from(JobStage.IMAGINE))
    assert plain.total == 4
    assert reservation_from_item({**reservation_fields(chain), "submit_claim": "token"}) == chain


def test_an_item_without_a_reservation_has_none_to_settle():
    assert reservation_from_item({"submit_claim": "t"}) is None  # claimed before the ledger existed
    assert reservation_from_item({"credits_reserved": {"inpaint": 4}, "credit_day": "2026-12-31"}) is None


@pytest.mark.parametrize(
    ("open_stage", "paid", "provider_failed", "return_failed", "spent"),
    [
        (JobStage.IMAGINE, False, False, True, []),  # the first stage was turned away
        (JobStage.IMAGINE, True, True, True, []),  # its task failed, and the provider refunds it
        (JobStage.IMAGINE, True, True, False, [JobStage.IMAGINE]),  # ... or charges it
        (JobStage.UPSCALE, False, False, True, [JobStage.IMAGINE]),  # files gone before the upscale
        (JobStage.INPAINT, True, False, True, list(stages_from(JobStage.IMAGINE))),  # e.g. a copy that failed
    ],
)
def test_a_settlement_keeps_what_was_paid_and_gives_back_the_rest(
    open_stage, paid, provider_failed, return_failed, spent
):
    reservation = reserve(stages_from(JobStage.IMAGINE), PRICES.__getitem__, NOW, "token")
    policy = BudgetPolicy(return_failed_credits=return_failed)

    settlement = settle(reservation, open_stage, open_stage_paid=paid, provider_failed=provider_failed, policy=policy)

    assert [stage for stage, _ in settlement.spent] == spent
    assert settlement.returned == 10 - sum(PRICES[stage] for stage in spent)
    assert settlement_fields(settlement)["credits_returned"] == settlement.returned


def test_a_whole_settlement_and_an_empty_one():
    reservation = reserve(stages_from(JobStage.UPSCALE), PRICES.__getitem__, NOW, "token")

    assert (all_spent(reservation).spent_total, all_spent(reservation).returned) == (6, 0)
    assert (none_spent(reservation).spent_total, none_spent(reservation).returned) == (0, 6)
    back = settlement_requests(none_spent(reservation))
    assert [r["ExpressionAttributeValues"][":back"] for r in back] == [-6, -6]


def test_only_a_limited_period_carries_a_condition_and_its_room_is_the_limit_less_the_chain():
    reservation = reserve(stages_from(JobStage.IMAGINE), PRICES.__getitem__, NOW, "token")

    day, month = reservation_requests(reservation, BudgetPolicy(daily_limit=25))

    assert day[1]["ExpressionAttributeValues"][":room"] == 15 and "ConditionExpression" in day[1]
    assert "ConditionExpression" not in month[1]


def test_period_usage_reads_a_missing_item_as_empty_and_knows_its_room():
    day = Period(PeriodKind.DAY, "2026-12-31")

    assert period_usage(None, day, BudgetPolicy(daily_limit=10)).room_for(10)
    used = period_usage({"reserved": 8, "spent": 4}, day, BudgetPolicy(daily_limit=10))
    assert used.in_flight == 4 and not used.room_for(4) and used.room_for(2)
    assert period_usage({"reserved": 10**6}, day, BudgetPolicy()).room_for(10**6), "0 is no limit"


def test_budget_settings_default_to_no_limit_and_hold():
    policy = Settings.from_env(REQUIRED).budget_policy

    assert policy == BudgetPolicy(0, 0, OverBudgetAction.HOLD, True)
    assert Settings.from_env(REQUIRED).balance_cache_seconds == 60


def test_budget_settings_are_read_from_the_environment():
    settings = Settings.from_env(
        REQUIRED
        | {
            "DAILY_CREDIT_LIMIT": "120",
            "MONTHLY_CREDIT_LIMIT": "0",
            "OVER_BUDGET": "Reject",
            "RETURN_FAILED_CREDITS": "false",
            "BALANCE_CACHE_SECONDS": "0",
        }
    )

    assert settings.budget_policy == BudgetPolicy(120, 0, OverBudgetAction.REJECT, False)
    assert settings.balance_cache_seconds == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DAILY_CREDIT_LIMIT", "-1"),
        ("MONTHLY_CREDIT_LIMIT", "1.5"),
        ("OVER_BUDGET", "wait"),
        ("RETURN_FAILED_CREDITS", "yes"),
    ],
)
def test_a_bad_budget_setting_is_refused_by_name(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(REQUIRED | {name: value})


class Reads:
    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.count = 0

    def __call__(self) -> int | None:
        self.count += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def test_the_balance_is_read_once_per_cache_period_and_lowered_by_what_is_sent_meanwhile():
    now = [0.0]
    reads = Reads(100, 40)
    balance = ProviderBalance(reads, cache_seconds=60, clock=lambda: now[0])

    assert balance.credits() == 100
    balance.note_spent(4)
    assert balance.credits() == 96 and reads.count == 1
    now[0] = 61
    assert balance.credits() == 40 and reads.count == 2


def test_an_unreadable_balance_is_unknown_not_zero_and_not_asked_again_on_every_job():
    now = [0.0]
    reads = Reads(ProviderUnavailable("down"), 7)
    balance = ProviderBalance(reads, cache_seconds=60, clock=lambda: now[0])

    assert balance.credits() is None
    assert balance.credits() is None and reads.count == 1
    now[0] = 60
    assert balance.credits() == 7


def test_a_zero_cache_period_switches_the_balance_check_off():
    reads = Reads()
    assert ProviderBalance(reads, cache_seconds=0).credits() is None and reads.count == 0
