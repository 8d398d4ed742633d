"""The job table: every state change is a conditional write, so a state never moves backwards,
a finished job never changes again, and two concurrent deliveries cannot both win."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from vary_region.core.credits import BudgetPolicy, Period, PeriodUsage
from vary_region.core.job import Job, JobStatus, timestamp
from vary_region.core.stages import JobStage
from vary_region.store import open_jobs
from vary_region.store.claims import ClaimTransitions
from vary_region.store.credit_ledger import credit_usage
from vary_region.store.final_states import FinalTransitions, JudgedStage
from vary_region.store.items import job_from_item
from vary_region.store.progress import ProgressTransitions
from vary_region.store.provider_slots import ProviderBusy, ProviderSlots
from vary_region.store.schema import active_shard
from vary_region.store.table_io import JobTableError

__all__ = ["JobTable", "JobTableError", "JudgedStage", "ProviderBusy"]


class JobTable(ClaimTransitions, ProgressTransitions, FinalTransitions):
    """The jobs table. Its transitions are written in the grammar of transitions.py; a received job's
    are here, the others by lifecycle in claims.py, progress.py and final_states.py."""

    def __init__(
        self,
        table: Any,
        ttl_days: int = 90,
        max_active_tasks: int | Callable[[], int] = 10,
        budget: BudgetPolicy | None = None,
    ) -> None:
        self._table = table  # a boto3 DynamoDB Table resource
        self._ttl = timedelta(days=ttl_days)
        self._slots = ProviderSlots(table, max_active_tasks)
        self._budget = budget or BudgetPolicy()

    # --- reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        try:
            item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        except ClientError as exc:
            raise JobTableError(str(exc)) from exc
        # An item without a status is not a job yet (moto can expose a half-applied first write).
        return job_from_item(item) if item and "status" in item else None

    def quiet_jobs(self, updated_before: datetime, limit: int = 100) -> list[Job]:
        """Unfinished jobs whose last change is older than `updated_before`, oldest first.

        The jobs come from the index's projection (state, task, claim and timings; no secret hash,
        metadata or result): enough to decide what to do with each, cheap to read in thousands.
        """
        return open_jobs.quiet_jobs(self._table, updated_before, limit)

    @property
    def budget_policy(self) -> BudgetPolicy:
        return self._budget

    @property
    def max_active_tasks(self) -> int:
        """How many provider tasks may be in flight at once (the provider-slot limit)."""
        return self._slots.limit

    def credit_usage(self, periods: tuple[Period, ...]) -> list[PeriodUsage]:
        """What each period has reserved and spent so far, against its limit (strongly consistent)."""
        return credit_usage(self._table, periods, self._budget)

    def slots_in_use(self) -> int:
        return self._slots.in_use()

    # --- a received job's transitions ---------------------------------------------------------

    def record_received(self, job_id: str, now: datetime) -> bool:
        """Create the RECEIVED item the first time any file of the job is seen."""
        return self._update(
            job_id,
            "SET #status = :received, created_at = :now, created_day = :day, updated_at = :now, active = :active, "
            "expires_at = :ttl",
            "attribute_not_exists(job_id)",
            {
                ":received": JobStatus.RECEIVED.value,
                ":now": timestamp(now),
                ":day": timestamp(now)[:10],
                ":active": active_shard(job_id),
                ":ttl": self._expiry(now),
            },
        )

    def set_task_token(self, job_id: str, token: str) -> bool:
        """Keep the caller's callback token on the job (the first one it was given: a job file
        changed since names no other caller); the publisher answers it when the job ends."""
        return self._update(
            job_id, "SET task_token = if_not_exists(task_token, :token)", "attribute_exists(job_id)", {":token": token}
        )

    def record_waiting_for(self, job_id: str, what: str, now: datetime) -> bool:
        """A received job misses one of its files: `waiting_for` names it until the job moves on."""
        return self._update(
            job_id,
            # No longer held: a job that lost a file meanwhile waits for it, and the stale-receipt rule
            # (JOB_INCOMPLETE) ends it if it never comes back.
            "SET waiting_for = :what REMOVE held_at, held_until",
            "#status = :received AND attribute_not_exists(submit_claim)",
            {":what": f"waiting for {what}", ":received": JobStatus.RECEIVED.value},
        )

    def mark_held(
        self,
        job_id: str,
        now: datetime,
        reason: str | None = None,
        stage: JobStage | None = None,
        *,
        credits_needed: int | None = None,
        held_until: datetime | None = None,
    ) -> bool:
        """The job is complete and valid but waits in the queue (no provider slot, provider down,
        parent still running, no room in the budget); `reason`, when given, is kept as `held_reason`:
        the last cause, and `held_until` as `held_until`: when it goes again or is next tried.

        stage: a later stage of a chain, waiting for its claim (the job is under way already).
        credits_needed: a job held for budget: its chain's cost, so its wake-ups can check the
        ledger without reading its files again.
        """
        values: dict[str, Any] = {":now": timestamp(now), ":received": JobStatus.RECEIVED.value}
        update = "SET held_at = if_not_exists(held_at, :now), updated_at = :now"
        if reason is not None:
            update += ", held_reason = :reason"
            values[":reason"] = reason
        if credits_needed is not None:
            update += ", credits_needed = :needed"
            values[":needed"] = credits_needed
        if held_until is not None:
            update += ", held_until = :until"
            values[":until"] = timestamp(held_until)
        update += " REMOVE waiting_for"  # held means whole: nothing is missing any more
        condition = "#status = :received AND attribute_not_exists(submit_claim)"
        if stage is not None:
            condition = self._open_and_claimed() + " AND " + self._between_stages(stage)
            values |= {":stage": stage.value} | self._open_values()
        return self._update(job_id, update, condition, values)
