"""Why and how long a valid job waits in the submit queue: the read-only decisions (HoldPolicy),
and the one act of holding it (Holder: back on the queue, and said on its item).

A held job's wake-up asks here first whether it must still wait (every provider slot still taken;
the budget's period still full, or the provider account still short), which costs a read of the
slot counter, the ledger or the cached balance instead of a re-read and re-validation of its files.
These reads only spare work: the claim's conditional transaction stays the guard against taking a
slot that is not free or spending credits that are not there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from vary_region.core.credits import periods_at
from vary_region.core.job import Job, JobStatus, timestamp
from vary_region.core.keys import InboxObject
from vary_region.core.stages import JobStage
from vary_region.observability import logger
from vary_region.provider.balance import ProviderBalance
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable
from vary_region.submit.outcome import SubmitOutcome, SubmitResult


class Hold(Protocol):
    """Puts an upload back on the submit queue, to be handled again after a delay (default: the
    queue's hold delay)."""

    def __call__(self, key: str, delay_seconds: int | None = None) -> None: ...


class HeldReason(StrEnum):
    """Why a valid job waits in the queue (`held_reason` on its item)."""

    PROVIDER_SLOTS_FULL = "PROVIDER_SLOTS_FULL"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PARENT_RUNNING = "PARENT_RUNNING"
    PARENT_UNAVAILABLE = "PARENT_UNAVAILABLE"  # Fetch or the parent's image host unreachable
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # the day's or the month's credit limit has no room for the chain
    PROVIDER_BALANCE_LOW = "PROVIDER_BALANCE_LOW"  # the provider account's credits cannot cover the chain


@dataclass(frozen=True)
class StillHeld:
    """A held job's wake-up that must wait again, decided without reading its files."""

    reason: HeldReason
    message: str
    already_held: bool  # nothing to write: the item says it already (table and index alike)
    delay_seconds: int | None = None
    until: datetime | None = None


class HoldPolicy:
    def __init__(
        self, settings: Settings, store: JobTable, clock: Callable[[], datetime], balance: ProviderBalance | None
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._balance = balance

    def on_wake_up(self, existing: Job) -> StillHeld | None:
        """The job's wake-up must wait again (without re-reading its mask, up to 8 MB, every 30-45 s),
        or None: the whole path decides."""
        if self._still_no_free_slot(existing):
            return StillHeld(
                HeldReason.PROVIDER_SLOTS_FULL, "still no free provider slot; job held back again", already_held=True
            )
        # Likewise for a job held for credits: a read of the ledger's two items, or of the balance.
        short = self._still_short_of_credits(existing)
        if short is None:
            return None
        reason, until = short
        return StillHeld(
            reason,
            "still short of credits; job held back again",
            # Written again only when the budget's date moved (a new day, still full): once a period.
            already_held=until is None or existing.held_until == timestamp(until),
            delay_seconds=self.credits_hold_delay(reason),
            until=until,
        )

    def _still_no_free_slot(self, job: Job) -> bool:
        """Only for a job already found valid and held: its inputs were checked when it was held, and
        the claim transaction, not this read, stays the guard against taking a slot that is not free."""
        if job.held_at is None or job.status is not JobStatus.RECEIVED or job.submit_claim is not None:
            return False
        return self._store.slots_in_use() >= self._store.max_active_tasks

    def _still_short_of_credits(self, job: Job) -> tuple[HeldReason, datetime | None] | None:
        """A job held for budget or for the provider's balance, whose cost was recorded when it was
        held: the reason it must still wait (with, for the budget, when the last full period ends),
        or None. As for slots, the claim's conditional reservation, not this read, is the guard
        against overspending."""
        needed = job.credits_needed
        if needed is None or job.held_at is None or job.status is not JobStatus.RECEIVED or job.submit_claim:
            return None  # not held now (held_reason is only the last cause): the whole path decides
        if job.held_reason == HeldReason.BUDGET_EXCEEDED:
            usage = self._store.credit_usage(periods_at(self._clock()))
            if any(period.limit and needed > period.limit for period in usage):
                return None  # the limit was lowered below the chain's cost: the claim rejects it
            full = [period.period.next_opens for period in usage if not period.room_for(needed)]
            return (HeldReason.BUDGET_EXCEEDED, max(full)) if full else None
        if job.held_reason == HeldReason.PROVIDER_BALANCE_LOW and self.balance_too_low(needed):
            return HeldReason.PROVIDER_BALANCE_LOW, None
        return None

    def credits_hold_delay(self, reason: HeldReason) -> int:
        """Budget: wake up when the day turns, or every 15 minutes (SQS's longest delay) if that is
        later, since credits given back by failed jobs may make room before then. Balance: once the
        cached balance may have changed."""
        if reason is HeldReason.PROVIDER_BALANCE_LOW:
            return max(self._settings.hold_delay_seconds, self._settings.balance_cache_seconds)
        now = self._clock()
        day, _ = periods_at(now)
        until_next_day = (day.next_opens - now).total_seconds()
        return int(max(self._settings.hold_delay_seconds, min(900, until_next_day + 1)))

    def balance_too_low(self, credits_needed: int) -> str | None:
        """Why the provider account cannot cover `credits_needed`, or None (also when its balance is unknown)."""
        left = self._balance.credits() if self._balance is not None else None
        if left is None or left >= credits_needed:
            return None
        return f"the provider account has {left} credits left, the job needs {credits_needed}"

    def next_try(self, now: datetime, delay_seconds: int | None) -> datetime:
        """About when a held job is tried again: its queue message's delay (the queue adds up to
        half as much again, and a slot-held job's later wake-ups do not write it anew)."""
        delay = self._settings.hold_delay_seconds if delay_seconds is None else delay_seconds
        return now + timedelta(seconds=delay)


class Holder:
    """Holds a valid job: its upload back on the submit queue, and why and until when on its item."""

    def __init__(self, hold: Hold, store: JobTable, policy: HoldPolicy, clock: Callable[[], datetime]) -> None:
        self._hold = hold
        self._store = store
        self._policy = policy
        self._clock = clock

    def hold_back(
        self,
        uploaded: InboxObject,
        message: str,
        reason: HeldReason,
        *,
        already_held: bool = False,
        stage: JobStage | None = None,
        delay_seconds: int | None = None,
        credits_needed: int | None = None,
        until: datetime | None = None,
        warning: bool = False,
    ) -> SubmitResult:
        """until: when the job can go (the budget's next period); by default, when it is next tried."""
        self._hold(uploaded.key, delay_seconds)
        if not already_held:  # a wake-up that changes nothing writes nothing (table and index alike)
            now = self._clock()
            until = until or self._policy.next_try(now, delay_seconds)
            self._store.mark_held(uploaded.job_id, now, reason, stage, credits_needed=credits_needed, held_until=until)
        (logger.warning if warning else logger.info)(message)
        return SubmitResult(SubmitOutcome.HELD, uploaded.job_id)

    def again(self, uploaded: InboxObject, still: StillHeld) -> SubmitResult:
        """A held job's wake-up that must wait again."""
        return self.hold_back(
            uploaded,
            still.message,
            still.reason,
            already_held=still.already_held,
            delay_seconds=still.delay_seconds,
            until=still.until,
        )
