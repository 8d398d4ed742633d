"""The budget's arithmetic: UTC days and months, what a job's chain reserves, and what its
settlement keeps as spent and gives back. The ledger's items that count them are the job table's
(store/credit_ledger.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from vary_region.core.stages import JobStage

# The value types are NamedTuples, not frozen dataclasses: every handler imports this module, and
# each frozen dataclass costs about 0.5 ms of cold start to build (measured), a NamedTuple 0.1 ms.

# Job ids never contain "/": these keys are no job's (like the provider-slot counter's).
LEDGER_PREFIX = "/credits/"


class PeriodKind(StrEnum):
    DAY = "day"
    MONTH = "month"


class OverBudgetAction(StrEnum):
    HOLD = "hold"  # the job waits (RECEIVED, held_reason BUDGET_EXCEEDED) and goes when budget is free
    REJECT = "reject"  # the job is REJECTED with BUDGET_EXCEEDED


class BudgetPolicy(NamedTuple):
    daily_limit: int = 0  # credits per UTC day; 0: no limit
    monthly_limit: int = 0  # credits per UTC month; 0: no limit
    over_budget: OverBudgetAction = OverBudgetAction.HOLD
    return_failed_credits: bool = True  # a task the provider failed costs nothing (the provider refunds it)

    def limit_of(self, kind: PeriodKind) -> int:
        return self.daily_limit if kind is PeriodKind.DAY else self.monthly_limit


class Period(NamedTuple):
    kind: PeriodKind
    name: str  # "2026-12-01" for a day, "2026-12" for a month (UTC)

    @classmethod
    def containing(cls, kind: PeriodKind, moment: datetime) -> Period:
        utc = moment.astimezone(UTC)
        return cls(kind, utc.strftime("%Y-%m-%d" if kind is PeriodKind.DAY else "%Y-%m"))

    @property
    def key(self) -> str:
        return f"{LEDGER_PREFIX}{self.kind}/{self.name}"

    @property
    def starts(self) -> datetime:
        if self.kind is PeriodKind.DAY:
            return datetime.strptime(self.name, "%Y-%m-%d").replace(tzinfo=UTC)
        return datetime.strptime(self.name, "%Y-%m").replace(tzinfo=UTC)

    @property
    def next_opens(self) -> datetime:
        start = self.starts
        if self.kind is PeriodKind.DAY:
            return start + timedelta(days=1)
        return (start + timedelta(days=32)).replace(day=1)


def periods_at(moment: datetime) -> tuple[Period, Period]:
    return Period.containing(PeriodKind.DAY, moment), Period.containing(PeriodKind.MONTH, moment)


class CreditReservation(NamedTuple):
    """The credits one job set aside for its whole chain, in the day and month of its first claim."""

    credits: tuple[tuple[JobStage, int], ...]  # each stage of the chain, in chain order
    day: str
    month: str
    claim: str  # the first claim's token (`credit_claim`): a settlement applies to this reservation only

    @property
    def total(self) -> int:
        return sum(credits for _, credits in self.credits)

    @property
    def periods(self) -> tuple[Period, Period]:
        return Period(PeriodKind.DAY, self.day), Period(PeriodKind.MONTH, self.month)


def reserve(
    stages: Iterable[JobStage], price: Callable[[JobStage], int], now: datetime, claim: str
) -> CreditReservation:
    day, month = periods_at(now)
    return CreditReservation(tuple((stage, price(stage)) for stage in stages), day.name, month.name, claim)


class OverBudget(Exception):
    """The chain's credits do not fit in a period's limit. `fits_ever` is False when they exceed the
    limit itself: such a job would wait forever, so it is rejected even under `hold`."""

    def __init__(self, period: Period, limit: int, needed: int, *, fits_ever: bool = True) -> None:
        self.period = period
        self.limit = limit
        self.needed = needed
        self.fits_ever = fits_ever
        if fits_ever:
            message = (
                f"the job needs {needed} credits and this {period.kind}'s limit of {limit} ({period.name}) "
                f"has no room left for them; it opens again at {period.next_opens:%Y-%m-%dT%H:%MZ}"
            )
        else:
            adjective = "daily" if period.kind is PeriodKind.DAY else "monthly"
            message = f"the job needs {needed} credits, more than the whole {adjective} limit of {limit}"
        super().__init__(message)


def check_fits_ever(reservation: CreditReservation, policy: BudgetPolicy) -> None:
    for period in reservation.periods:
        limit = policy.limit_of(period.kind)
        if limit and reservation.total > limit:
            raise OverBudget(period, limit, reservation.total, fits_ever=False)


class Settlement(NamedTuple):
    """How a job's reservation ends: the credits its stages spent, and the rest given back."""

    reservation: CreditReservation
    spent: tuple[tuple[JobStage, int], ...]

    @property
    def spent_total(self) -> int:
        return sum(credits for _, credits in self.spent)

    @property
    def returned(self) -> int:
        return self.reservation.total - self.spent_total


def settle(
    reservation: CreditReservation,
    open_stage: JobStage,
    *,
    open_stage_paid: bool,
    provider_failed: bool = False,
    policy: BudgetPolicy,
) -> Settlement:
    """Every stage before the open one was paid; the open one when its task was (or may have been)
    accepted; none after it. A task the provider failed is given back when the policy says the
    provider refunds it."""
    spent = []
    for stage, credits in reservation.credits:
        if stage is open_stage:
            if open_stage_paid and not (provider_failed and policy.return_failed_credits):
                spent.append((stage, credits))
            break
        spent.append((stage, credits))
    return Settlement(reservation, tuple(spent))


def all_spent(reservation: CreditReservation) -> Settlement:
    return Settlement(reservation, reservation.credits)


def none_spent(reservation: CreditReservation) -> Settlement:
    return Settlement(reservation, ())


class PeriodUsage(NamedTuple):
    period: Period
    reserved: int  # counted against the limit: spent by finished jobs, set aside by open ones
    spent: int  # by jobs that have ended
    limit: int  # 0: none

    @property
    def in_flight(self) -> int:
        return self.reserved - self.spent

    def room_for(self, credits: int) -> bool:
        return not self.limit or self.reserved + credits <= self.limit
