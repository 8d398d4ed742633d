"""The job table: every state change is a conditional write, so a state never moves backwards,
a finished job never changes again, and two concurrent deliveries cannot both win."""

from __future__ import annotations

import heapq
import json
import math
import random
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from vary_region.core.credits import (
    BudgetPolicy,
    CreditReservation,
    OverBudget,
    Period,
    PeriodUsage,
    Settlement,
    check_fits_ever,
    period_usage,
    reservation_from_item,
    reservation_requests,
    settle,
)
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.job import Job, JobStatus, timestamp
from vary_region.core.stages import CHAIN, JobStage, parse_stage
from vary_region.core.strict_json import read_stored
from vary_region.store.schema import ACTIVE_VALUES, OPEN_JOBS_INDEX, SLOTS_KEY, active_shard

_TRANSACTION_ATTEMPTS = 5


class JobTableError(Exception):
    """The table could not be read or written (not a lost race: those return False)."""


class ProviderBusy(Exception):
    """Every provider slot is taken (MAX_ACTIVE_TASKS tasks in flight): hold the job back."""


def _lost_race(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class JudgedStage(NamedTuple):
    """What a failure was judged on: the stage open when the job was read, and what that stage held
    then: its task, or the claim of a submission with no task recorded yet, or neither (the chain
    was between stages). A failure write wins only while the job still holds exactly that, so a
    verdict about a stage the job has left (a late worker's, a stale read's) changes nothing.

    task_id and claim together: the task, or that claim while the task is not recorded yet (a
    webhook can outrun the submission's own write).
    """

    stage: JobStage
    task_id: str | None = None
    claim: str | None = None

    def settlement(
        self,
        reservation: CreditReservation | None,
        *,
        open_stage_paid: bool,
        provider_failed: bool = False,
        policy: BudgetPolicy,
    ) -> Settlement | None:
        """The job's credits settled as of this stage: the one the failure write is pinned to, so a
        write that loses its condition has settled nothing, and one that wins settled its own stage."""
        if reservation is None:
            return None
        return settle(
            reservation, self.stage, open_stage_paid=open_stage_paid, provider_failed=provider_failed, policy=policy
        )


class JobTable:
    def __init__(
        self,
        table: Any,
        ttl_days: int = 90,
        max_active_tasks: int | Callable[[], int] = 10,
        budget: BudgetPolicy | None = None,
    ) -> None:
        self._table = table  # a boto3 DynamoDB Table resource
        self._ttl = timedelta(days=ttl_days)
        # A number, or (v2 with the setting left empty) the account's own limit, read when first needed.
        self._max_active = max_active_tasks
        self._budget = budget or BudgetPolicy()

    # --- reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        try:
            item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        except ClientError as exc:
            raise JobTableError(str(exc)) from exc
        # An item without a status is not a job yet (moto can expose a half-applied first write).
        return _job_from_item(item) if item and "status" in item else None

    def quiet_jobs(self, updated_before: datetime, limit: int = 100) -> list[Job]:
        """Unfinished jobs whose last change is older than `updated_before`, oldest first.

        The jobs come from the index's projection (state, task, claim and timings; no secret hash,
        metadata or result): enough to decide what to do with each, cheap to read in thousands.
        """
        from boto3.dynamodb.conditions import Key

        # Each shard's oldest, a fair share and some slack each: not limit x 9 items read every run.
        share = max(20, 2 * math.ceil(limit / len(ACTIVE_VALUES)))
        per_shard = [
            self._query_all(
                IndexName=OPEN_JOBS_INDEX,
                KeyConditionExpression=Key("active").eq(value) & Key("updated_at").lt(timestamp(updated_before)),
                limit=min(limit, share),
            )
            for value in ACTIVE_VALUES
        ]
        oldest = heapq.merge(*per_shard, key=lambda item: str(item.get("updated_at", "")))
        return [_job_from_item(item) for _, item in zip(range(limit), oldest, strict=False)]

    def _query_all(self, *, limit: int, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs["Limit"] = limit
        while len(items) < limit:
            try:
                page = self._table.query(**kwargs)
            except ClientError as exc:
                raise JobTableError(str(exc)) from exc
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return items[:limit]

    # --- transitions ---------------------------------------------------------------------------

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

    def record_final_signal(self, job_id: str, task_id: str, now: datetime, stage: JobStage = JobStage.INPAINT) -> bool:
        """A webhook reported the task of `stage` finished or failed: note it (and the task id, in case
        the webhook outran the submission's own write) before the completion worker confirms it."""
        return self._update(
            job_id,
            "SET task_id = :task, final_reported_at = :now, updated_at = :now",
            self._open_and_claimed() + " AND " + self._task_of_stage(stage),
            {":task": task_id, ":now": timestamp(now), ":stage": stage.value} | self._open_values(),
        )

    def claim_submission(
        self,
        job_id: str,
        token: str,
        secret_hash: str,
        parent_task_id: str | None,
        prompt: str | None,
        metadata: dict[str, Any],
        now: datetime,
        *,
        stage: JobStage = JobStage.INPAINT,
        first: bool = True,
        inbox_key: str | None = None,
        parent_image_url: str | None = None,
        mask_key: str | None = None,
        reservation: CreditReservation | None = None,
    ) -> bool:
        """Win the right to make the one paid submission of this job's `stage`, with a provider slot.

        first: the job's first stage (the job is RECEIVED and was never claimed); a later stage is
        claimed once the stage before it finished and the job moved on to it (advance_stage).
        reservation: the first claim sets aside the credits of the whole chain in the day's and the
        month's ledger items, each conditional on its limit (its `claim` must be `token`).
        False: another delivery has the claim. ProviderBusy: all slots are taken. OverBudget: a period
        has no room for the chain. All writes are one transaction, so a slot or credits are never
        taken without a claim that will give them back.
        """
        values: dict[str, Any] = {
            ":token": token,
            ":now": timestamp(now),
            ":hash": secret_hash,
            ":stage": stage.value,
            ":yes": True,
        }
        update = (
            "SET submit_claim = :token, submit_claimed_at = :now, updated_at = :now, "
            f"{stage.secret_attribute} = :hash, claim_stage = :stage, holds_slot = :yes"
        )
        # The inpaint's own inputs, for the results: its parent image and the mask it was sent.
        for name, value in (("parent_image_url", parent_image_url), ("mask_key", mask_key)):
            if value is not None:
                update += f", {name} = :{name}"
                values[f":{name}"] = value
        if first:
            update += (
                ", #stage = :stage, parent_task_id = :parent, prompt = :prompt, metadata_json = :metadata, "
                "inbox_key = :inbox"
            )
            condition = "#status = :received AND attribute_not_exists(submit_claim)"
            values |= {
                ":parent": parent_task_id,
                ":prompt": prompt,
                ":metadata": json.dumps(metadata, ensure_ascii=False, allow_nan=False),
                ":received": JobStatus.RECEIVED.value,
                ":inbox": inbox_key,
            }
            if reservation is not None:
                check_fits_ever(reservation, self._budget)
                for name, value in reservation.item_fields().items():
                    update += f", {name} = :{name}"
                    values[f":{name}"] = value
                update += ", credits_needed = :credits_needed"
                values[":credits_needed"] = reservation.total
            update += " REMOVE expires_at, held_at, held_until, waiting_for"
        else:
            # Once per stage: `stage` only moves forward, and claim_stage becomes this stage only here.
            update += " REMOVE held_at, held_until"
            condition = self._open_and_claimed() + " AND " + self._between_stages(stage)
            values |= self._open_values()
        job_update = self._update_request(job_id, update, condition, values)
        take_slot = {
            "Key": {"job_id": SLOTS_KEY},
            "UpdateExpression": "SET in_use = if_not_exists(in_use, :zero) + :one",
            "ConditionExpression": "attribute_not_exists(in_use) OR in_use < :max",
            "ExpressionAttributeValues": {":zero": 0, ":one": 1, ":max": self.max_active_tasks},
        }
        ledger = reservation_requests(reservation, self._budget) if first and reservation is not None else []
        job_lost, slots_full, *periods_full = self._transact(job_update, take_slot, *(r for _, r in ledger))
        if job_lost:
            return False
        # The last to open of the full periods (the month's, when both are full): the job waits for it.
        for (period, _), full in reversed(list(zip(ledger, periods_full, strict=True))):
            if full:  # before the slot: a job over budget waits longer than one waiting for a slot
                assert reservation is not None
                raise OverBudget(period, self._budget.limit_of(period.kind), reservation.total)
        if slots_full:
            raise ProviderBusy(f"{self.max_active_tasks} provider tasks are already in flight")
        return True

    @property
    def budget_policy(self) -> BudgetPolicy:
        return self._budget

    @property
    def max_active_tasks(self) -> int:
        """How many provider tasks may be in flight at once (the provider-slot limit)."""
        limit = self._max_active
        return limit() if callable(limit) else limit

    def credit_usage(self, periods: tuple[Period, ...]) -> list[PeriodUsage]:
        """What each period has reserved and spent so far, against its limit (strongly consistent)."""
        usage = []
        for period in periods:
            try:
                item = self._table.get_item(Key={"job_id": period.key}, ConsistentRead=True).get("Item")
            except ClientError as exc:
                raise JobTableError(str(exc)) from exc
            usage.append(period_usage(item, period, self._budget))
        return usage

    def slots_in_use(self) -> int:
        item = self._table.get_item(Key={"job_id": SLOTS_KEY}, ConsistentRead=True).get("Item") or {}
        return int(item.get("in_use", 0))

    def release_claim(
        self, job_id: str, token: str, now: datetime, *, first: bool = True, returned: Settlement | None = None
    ) -> bool:
        """Give the claim (and its slot) back when the provider certainly did not accept the request.

        A later stage's release keeps `submit_claim`: the stages before it were paid for.
        returned: the first claim's reservation, given back whole in the same transaction.
        """
        removed = "submit_claim, submit_claimed_at, webhook_secret_hash, claim_stage" if first else "claim_stage"
        ledger: list[dict[str, Any]] = []
        if first and returned is not None:
            removed += ", credits_reserved, credit_day, credit_month, credit_claim"
            ledger = returned.requests()
        return self._update(
            job_id,
            f"SET updated_at = :now REMOVE {removed}",
            "submit_claim = :token AND attribute_not_exists(task_id)",
            {":token": token, ":now": timestamp(now)},
            release_slot=True,
            also=ledger,
        )

    def mark_submitted(
        self, job_id: str, token: str, task_id: str, now: datetime, stage: JobStage = JobStage.INPAINT
    ) -> bool:
        values = {
            ":token": token,
            ":task": task_id,
            ":now": timestamp(now),
            ":received": JobStatus.RECEIVED.value,
            ":stage": stage.value,
        }
        stage_task = f"{stage.task_id_attribute} = :task"
        # Each write only while `stage` is still the open one: a late write after the stage finished
        # (its webhook outran this one) must never give the next stage this stage's task.
        open_stage = self._stage_is(stage)
        if self._update(
            job_id,
            f"SET #status = :submitted, task_id = :task, {stage_task}, submitted_at = :now, updated_at = :now",
            f"submit_claim = :token AND #status = :received AND {open_stage}",
            values | {":submitted": JobStatus.SUBMITTED.value},
        ):
            return True
        if self._update(  # a later stage: the job is already under way and keeps its status
            job_id,
            f"SET task_id = :task, {stage_task}, updated_at = :now",
            f"submit_claim = :token AND claim_stage = :stage AND attribute_not_exists(task_id) AND {open_stage} AND "
            + self._open_and_claimed(),
            values | self._open_values(),
        ):
            return True
        # A webhook may have outrun us and already recorded this task (and moved the job on).
        return self._update(
            job_id,
            f"SET submitted_at = if_not_exists(submitted_at, :now), {stage_task}",
            f"submit_claim = :token AND task_id = :task AND attribute_not_exists({stage.task_id_attribute}) AND "
            + f"{open_stage} AND "
            + self._open_and_claimed(),
            values | self._open_values(),
        )

    def mark_submit_ambiguous(self, job_id: str, token: str, error: JobError, now: datetime) -> bool:
        """The request may have created a task: keep the job open, flagged, and never resend it."""
        values = {
            ":submitted": JobStatus.SUBMITTED.value,
            ":now": timestamp(now),
            ":yes": True,
            ":error": error.to_dict(),
            ":token": token,
            ":received": JobStatus.RECEIVED.value,
        }
        if self._update(
            job_id,
            "SET #status = :submitted, submitted_at = :now, updated_at = :now, needs_attention = :yes, #error = :error",
            "submit_claim = :token AND #status = :received",
            values,
        ):
            return True
        return self._update(  # a later stage: its claim stays, so it is never sent again
            job_id,
            "SET updated_at = :now, needs_attention = :yes, #error = :error",
            "submit_claim = :token AND attribute_not_exists(task_id) AND " + self._open_and_claimed(),
            values | self._open_values(),
        )

    def advance_stage(self, job_id: str, stage: JobStage, task_id: str, to: JobStage, now: datetime) -> bool:
        """`stage`'s task finished and was confirmed: the job moves on to `to`, whose claim is still to
        be won. Its provider slot is given back; the next stage takes one of its own."""
        return self._update(
            job_id,
            f"SET #stage = :to, #status = :processing, {stage.task_id_attribute} = :task, updated_at = :now, "
            "stage_opened_at = :now "
            # The stage before was settled by its own task: an ambiguity flag of its submission is
            # answered, and the next stage starts unflagged.
            "REMOVE task_id, percentage, final_reported_at, copy_lease_until, copy_lease, copy_failures, "
            "#error, needs_attention",
            self._open_and_claimed() + " AND task_id = :task AND " + self._stage_is(stage),
            {
                ":to": to.value,
                ":task": task_id,
                ":now": timestamp(now),
                ":stage": stage.value,
                ":processing": JobStatus.PROCESSING.value,
            }
            | self._open_values(),
            release_slot=True,
        )

    def record_progress(
        self, job_id: str, task_id: str, percentage: int | None, now: datetime, stage: JobStage | None = None
    ) -> bool:
        """Move to PROCESSING; progress only goes up, and never after the job finished.

        stage: the stage the report is about; without it (the reconciler), only the task the job
        already has is updated.
        """
        values: dict[str, Any] = {":task": task_id, ":now": timestamp(now), ":processing": JobStatus.PROCESSING.value}
        update = "SET #status = :processing, task_id = :task, updated_at = :now"
        if stage is None:
            condition = self._open_and_claimed() + " AND task_id = :task"
        else:
            condition = self._open_and_claimed() + " AND " + self._task_of_stage(stage)
            values[":stage"] = stage.value
        # Only news moves a job: a repeated (or replayed) report must not keep it from looking quiet,
        # or a job whose final webhook was lost would never be reconciled.
        if percentage is not None:
            update += ", percentage = :pct"
            condition += " AND (attribute_not_exists(percentage) OR percentage < :pct)"
            values[":pct"] = percentage
        else:
            condition += " AND #status <> :processing"
        return self._update(job_id, update, condition, values | self._open_values())

    def touch(self, job_id: str, now: datetime) -> bool:
        """Note that the reconciler looked: the job goes to the back of the quiet-jobs line, so every
        open job is looked at in turn, and a running one is asked about again only after a quiet period."""
        return self._update(
            job_id,
            "SET updated_at = :now",
            "#status IN (:s_received, :s_submitted, :s_processing)",
            {":now": timestamp(now)} | self._open_values(),
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

    def acquire_copy_lease(
        self, job_id: str, task_id: str, lease: str, now: datetime, seconds: int, stage: JobStage = JobStage.INPAINT
    ) -> bool:
        """One copier at a time per job, so concurrent final webhooks do not copy twice."""
        return self._update(
            job_id,
            "SET copy_lease_until = :until, copy_lease = :lease, task_id = :task",
            self._open_and_claimed()
            + " AND "
            + self._task_of_stage(stage)
            + " AND (attribute_not_exists(copy_lease_until) OR copy_lease_until < :now)",
            {
                ":until": timestamp(now + timedelta(seconds=seconds)),
                ":now": timestamp(now),
                ":task": task_id,
                ":lease": lease,
                ":stage": stage.value,
            }
            | self._open_values(),
        )

    def release_copy_lease(self, job_id: str, lease: str) -> bool:
        """Give the lease back without counting a failure (the copy did not fail: it was cut short)."""
        return self._update(job_id, "REMOVE copy_lease_until, copy_lease", "copy_lease = :lease", {":lease": lease})

    def record_copy_failure(self, job_id: str, lease: str, message: str, now: datetime) -> int:
        """Count a failed copy and give the lease back, only if the lease is still this copier's."""
        try:
            response = self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET last_copy_error = :message, updated_at = :now "
                "REMOVE copy_lease_until, copy_lease ADD copy_failures :one",
                ConditionExpression=self._open_and_claimed() + " AND copy_lease = :lease",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":message": message[:1000], ":now": timestamp(now), ":one": 1}
                | {":lease": lease}
                | self._open_values(),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _lost_race(exc):
                return 0
            raise JobTableError(str(exc)) from exc
        return int(response["Attributes"]["copy_failures"])

    def mark_completed(
        self, job_id: str, task_id: str, result: dict[str, Any], now: datetime, settlement: Settlement | None = None
    ) -> bool:
        """settlement: the job's reservation, all spent, counted as spent in the same transaction."""
        update, condition, values, ledger = self._settling(
            "SET #status = :completed, percentage = :hundred, completed_at = :now, updated_at = :now, "
            "inpaint_task_id = :task, #result = :result, expires_at = :ttl",
            self._open_and_claimed() + " AND task_id = :task",
            settlement,
        )
        return self._update(
            job_id,
            update + " REMOVE active, copy_lease_until, copy_lease, #error, needs_attention",
            condition,
            {
                ":completed": JobStatus.COMPLETED.value,
                ":hundred": 100,
                ":now": timestamp(now),
                ":result": result,
                ":ttl": self._expiry(now),
                ":task": task_id,
            }
            | self._open_values()
            | values,
            release_slot=True,
            also=ledger,
        )

    def mark_failed(
        self,
        job_id: str,
        error: JobError,
        now: datetime,
        judged: JudgedStage,
        *,
        settlement: Settlement | None = None,
    ) -> bool:
        """A claimed job ends: the provider said no or failed its task, the results could not be
        copied, its task timed out, or a chain's later stage cannot start.

        judged: the stage (and its task or claim) the failure is about; the job fails only while it
        still holds exactly that (see JudgedStage).
        settlement: what the job's stages spent, as of `judged.stage` (JudgedStage.settlement); the
        rest of its reservation goes back to its periods in the same transaction.
        """
        condition, pinned = self._judged(judged)
        update, condition, settled, ledger = self._settling(
            "SET #status = :failed, #error = :error, completed_at = :now, updated_at = :now, expires_at = :ttl",
            self._open_and_claimed() + " AND " + condition,
            settlement,
        )
        return self._update(
            job_id,
            update + " REMOVE active, copy_lease_until, copy_lease",
            condition,
            {
                ":failed": JobStatus.FAILED.value,
                ":error": error.to_dict(),
                ":now": timestamp(now),
                ":ttl": self._expiry(now),
            }
            | self._open_values()
            | pinned
            | settled,
            release_slot=True,
            also=ledger,
        )

    def mark_rejected(self, job_id: str, error: JobError, now: datetime) -> bool:
        """Bad input: only a job that was never claimed for submission can be rejected."""
        return self._update(
            job_id,
            "SET #status = :rejected, #error = :error, completed_at = :now, updated_at = :now, expires_at = :ttl, "
            "created_at = if_not_exists(created_at, :now), created_day = if_not_exists(created_day, :day) "
            "REMOVE active, waiting_for",
            "attribute_not_exists(job_id) OR (#status = :received AND attribute_not_exists(submit_claim))",
            {
                ":rejected": JobStatus.REJECTED.value,
                ":error": error.to_dict(),
                ":now": timestamp(now),
                ":ttl": self._expiry(now),
                ":received": JobStatus.RECEIVED.value,
                ":day": timestamp(now)[:10],
            },
        )

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _settling(
        update: str, condition: str, settlement: Settlement | None
    ) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
        """A final write that settles the job's reservation: the job records what was spent and
        returned, only while it still holds that reservation (`credit_claim`, its first claim's
        token), and the periods' items are updated in the same transaction."""
        if settlement is None:
            return update, condition, {}, []
        values: dict[str, Any] = {":reservation_claim": settlement.reservation.claim}
        for name, value in settlement.item_fields().items():
            update += f", {name} = :{name}"
            values[f":{name}"] = value
        return update, condition + " AND credit_claim = :reservation_claim", values, settlement.requests()

    @staticmethod
    def _open_and_claimed() -> str:
        return "#status IN (:s_received, :s_submitted, :s_processing) AND attribute_exists(submit_claim)"

    @staticmethod
    def _stage_is(stage: JobStage) -> str:
        """The open stage is :stage (items made before chains have no stage: they are inpaint jobs)."""
        if stage is JobStage.INPAINT:
            return "(#stage = :stage OR attribute_not_exists(#stage))"
        return "#stage = :stage"

    @classmethod
    def _task_of_stage(cls, stage: JobStage) -> str:
        """The report names the open stage's task: its known task id, or the stage has none yet but is
        claimed (a webhook may outrun the submission's own write)."""
        return (
            cls._stage_is(stage)
            + " AND (task_id = :task OR (attribute_not_exists(task_id) AND (claim_stage = :stage"
            + " OR attribute_not_exists(claim_stage))))"
        )

    @classmethod
    def _judged(cls, judged: JudgedStage) -> tuple[str, dict[str, Any]]:
        """The condition that the job still holds what a failure was judged on, and its values."""
        values: dict[str, Any] = {":stage": judged.stage.value}
        if judged.task_id is None and judged.claim is None:
            return cls._between_stages(judged.stage), values
        task = "task_id = :judged_task"
        unrecorded = "attribute_not_exists(task_id) AND submit_claim = :judged_claim AND " + cls._claim_of_stage(
            judged.stage
        )
        if judged.task_id is not None:
            values[":judged_task"] = judged.task_id
        if judged.claim is not None:
            values[":judged_claim"] = judged.claim
        if judged.claim is None:
            held = task
        elif judged.task_id is None:
            held = unrecorded
        else:  # DynamoDB refuses redundant parentheses: only these two need them
            held = f"({task} OR ({unrecorded}))"
        return cls._stage_is(judged.stage) + " AND " + held, values

    @staticmethod
    def _claim_of_stage(stage: JobStage) -> str:
        """The claim is :stage's (a claim written before chains existed, on an item without a stage,
        is its one inpaint's)."""
        if stage is JobStage.INPAINT:
            return "(claim_stage = :stage OR attribute_not_exists(#stage))"
        return "claim_stage = :stage"

    @classmethod
    def _between_stages(cls, stage: JobStage) -> str:
        """The open stage is :stage and nobody holds its claim: the stage before it finished."""
        return (
            cls._stage_is(stage)
            + " AND attribute_not_exists(task_id) AND (attribute_not_exists(claim_stage) OR claim_stage <> :stage)"
        )

    @staticmethod
    def _open_values() -> dict[str, str]:
        return {
            ":s_received": "RECEIVED",
            ":s_submitted": "SUBMITTED",
            ":s_processing": "PROCESSING",
        }

    def _expiry(self, now: datetime) -> int:
        return int((now + self._ttl).timestamp())

    @staticmethod
    def _update_request(job_id: str, update: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        # Each job write leaves its own id on the item: an answer lost and the request resent, its
        # condition fails on the write it made itself, and the id tells so (_already_written).
        write = "write_id = :write_id"
        update = update.replace("SET ", f"SET {write}, ", 1) if "SET " in update else f"SET {write} {update}"
        values = values | {":write_id": uuid.uuid4().hex}
        tokens = set(re.findall(r"[:#]\w+", update + " " + condition))
        request: dict[str, Any] = {
            "Key": {"job_id": job_id},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": {k: v for k, v in values.items() if k in tokens},
        }
        names = {name: name[1:] for name in ("#status", "#error", "#result", "#stage") if name in tokens}
        if names:
            request["ExpressionAttributeNames"] = names
        return request

    def _update(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        *,
        release_slot: bool = False,
        also: list[dict[str, Any]] | None = None,
    ) -> bool:
        """One conditional job update; False when the condition failed (a lost race, not an error).

        A condition that fails on an item that carries this update's own write id is this update's
        earlier attempt, applied although its answer was lost (botocore sent it again): True, not a
        lost race.

        release_slot: the update ends the job's claim, so the provider slot it holds (if any) is
        given back in the same transaction.
        also: unconditional updates of other items (the credit ledger's) made in the same
        transaction, so they happen exactly when the job's update does.
        """
        also = also or []
        if release_slot:
            update = update + (", holds_slot" if " REMOVE " in update else " REMOVE holds_slot")
            held = self._update_request(job_id, update, condition + " AND holds_slot = :yes", values | {":yes": True})
            give_back = {
                "Key": {"job_id": SLOTS_KEY},
                "UpdateExpression": "SET in_use = in_use - :one",
                "ConditionExpression": "in_use > :zero",
                "ExpressionAttributeValues": {":one": 1, ":zero": 0},
            }
            job_lost, counter_empty, *_ = self._transact(held, give_back, *also)
            if not job_lost and not counter_empty:
                return True
            # No slot held, a lost race, or a counter already at zero: the plain update decides.
        if also:
            job_lost, *_ = self._transact(self._update_request(job_id, update, condition, values), *also)
            return not job_lost
        request = self._update_request(job_id, update, condition, values)
        try:
            self._table.update_item(**request, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            if _lost_race(exc):
                return _already_written(request, exc.response.get("Item"))
            raise JobTableError(str(exc)) from exc
        return True

    def _transact(self, *requests: dict[str, Any]) -> list[bool]:
        """Conditional updates, all or nothing; returns, per update, whether its condition failed.

        None failed when an update's item carries that update's own write id: an earlier attempt of
        this very transaction was applied, its answer lost (see _update).
        """
        # The resource's client serialises plain Python values itself, as Table.update_item does.
        items = [
            {"Update": dict(request, TableName=self._table.name) | _old_item_on_failed_condition(request)}
            for request in requests
        ]
        count = len(items)
        for attempt in range(_TRANSACTION_ATTEMPTS):
            try:
                self._table.meta.client.transact_write_items(TransactItems=items)
                return [False] * count
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise JobTableError(str(exc)) from exc
                reasons = exc.response.get("CancellationReasons") or _reasons_from_message(str(exc))
                codes = ([r.get("Code") for r in reasons] + [None] * count)[:count]
                if "ConditionalCheckFailed" in codes:
                    olds = ([r.get("Item") for r in reasons] + [None] * count)[:count]
                    if any(
                        code == "ConditionalCheckFailed" and _already_written(request, old)
                        for request, code, old in zip(requests, codes, olds, strict=True)
                    ):
                        return [False] * count
                    return [code == "ConditionalCheckFailed" for code in codes]
                # The slot counter and the ledger's items are hot: concurrent transactions on them
                # conflict. Retry those.
                if "TransactionConflict" not in codes or attempt == _TRANSACTION_ATTEMPTS - 1:
                    raise JobTableError(str(exc)) from exc
                time.sleep(random.uniform(0.01, 0.05 * 2**attempt))
        raise AssertionError("unreachable")


def _already_written(request: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """The item (as DynamoDB returned it on a failed condition) carries this request's own write id:
    the update was applied by an earlier attempt of this very request (its answer lost, botocore sent
    it again), so the failed condition is no lost race."""
    write_id = request.get("ExpressionAttributeValues", {}).get(":write_id")
    if write_id is None or not old:
        return False
    return bool(old.get("write_id") == {"S": write_id})


def _old_item_on_failed_condition(request: dict[str, Any]) -> dict[str, str]:
    return {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if "ConditionExpression" in request else {}


def _reasons_from_message(message: str) -> list[dict[str, Any]]:
    """Some endpoints put the reasons only in the message: "... reasons [ConditionalCheckFailed, None]"."""
    listed = message.rsplit("[", 1)[-1].rstrip("]").split(",")
    return [{"Code": reason.strip()} for reason in listed]


def _job_from_item(item: dict[str, Any]) -> Job:
    error = item.get("error")
    stage = parse_stage(item.get("stage"))
    return Job(
        job_id=item["job_id"],
        status=JobStatus(item["status"]),
        created_at=item.get("created_at", ""),
        updated_at=item.get("updated_at", ""),
        task_id=item.get("task_id"),
        percentage=int(item["percentage"]) if item.get("percentage") is not None else None,
        parent_task_id=item.get("parent_task_id"),
        prompt=item.get("prompt"),
        metadata=read_stored(item["metadata_json"]) if item.get("metadata_json") else {},
        webhook_secret_hash=item.get("webhook_secret_hash"),
        submit_claim=item.get("submit_claim"),
        submit_claimed_at=item.get("submit_claimed_at"),
        submitted_at=item.get("submitted_at"),
        completed_at=item.get("completed_at"),
        needs_attention=bool(item.get("needs_attention", False)),
        held_at=item.get("held_at"),
        stage_opened_at=item.get("stage_opened_at"),
        copy_failures=int(item.get("copy_failures", 0)),
        error=JobError(error["code"], error["message"], ErrorStage(error["stage"]))
        if isinstance(error, dict)
        else None,
        result=_plain(item.get("result")),
        stage=stage,
        claim_stage=_claim_stage(item, stage),
        stage_task_ids={s: item[s.task_id_attribute] for s in CHAIN if item.get(s.task_id_attribute)},
        stage_secret_hashes={s: item[s.secret_attribute] for s in CHAIN if item.get(s.secret_attribute)},
        inbox_key=item.get("inbox_key"),
        parent_image_url=item.get("parent_image_url"),
        mask_key=item.get("mask_key"),
        held_reason=item.get("held_reason"),
        held_until=item.get("held_until"),
        reservation=reservation_from_item(item),
        credits_needed=int(item["credits_needed"]) if item.get("credits_needed") is not None else None,
    )


def _claim_stage(item: dict[str, Any], stage: JobStage) -> JobStage | None:
    """The stage the claim belongs to. A claim written before chains existed (no `stage` on the item)
    is the job's one inpaint stage's; a chain's later stage given back has none."""
    if not item.get("submit_claim"):
        return None
    if item.get("claim_stage"):
        return parse_stage(item["claim_stage"], stage)
    return stage if "stage" not in item else None


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; callers want JSON-ready values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
