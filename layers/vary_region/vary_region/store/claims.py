"""The claim on a stage's one paid submission: won (with a provider slot, and the first claim with
the chain's credits), given back when the provider certainly did not take the request, and turned
into the task the provider made, or into a flag when it may have made one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from vary_region.core.credits import CreditReservation, OverBudget, Settlement, check_fits_ever
from vary_region.core.errors import JobError
from vary_region.core.job import JobStatus, timestamp
from vary_region.core.stages import JobStage
from vary_region.store.credit_ledger import reservation_requests, settlement_requests
from vary_region.store.items import reservation_fields
from vary_region.store.provider_slots import ProviderBusy
from vary_region.store.table_io import transact, update_request
from vary_region.store.transitions import Transitions


class ClaimTransitions(Transitions):
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
                for name, value in reservation_fields(reservation).items():
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
        job_update = update_request(job_id, update, condition, values)
        take_slot = self._slots.take()
        ledger = reservation_requests(reservation, self._budget) if first and reservation is not None else []
        job_lost, slots_full, *periods_full = transact(self._table, job_update, take_slot, *(r for _, r in ledger))
        if job_lost:
            return False
        # The last to open of the full periods (the month's, when both are full): the job waits for it.
        for (period, _), full in reversed(list(zip(ledger, periods_full, strict=True))):
            if full:  # before the slot: a job over budget waits longer than one waiting for a slot
                assert reservation is not None
                raise OverBudget(period, self._budget.limit_of(period.kind), reservation.total)
        if slots_full:
            raise ProviderBusy(f"{self._slots.limit} provider tasks are already in flight")
        return True

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
            ledger = settlement_requests(returned)
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
