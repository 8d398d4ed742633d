"""A job's final write: COMPLETED, FAILED (pinned to the stage it was judged on) or REJECTED. Each
ends the claim, gives back its provider slot and settles its credits, all in one transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from vary_region.core.credits import BudgetPolicy, CreditReservation, Settlement, settle
from vary_region.core.errors import JobError
from vary_region.core.job import JobStatus, timestamp
from vary_region.core.stages import JobStage
from vary_region.store.credit_ledger import settlement_requests
from vary_region.store.items import settlement_fields
from vary_region.store.transitions import Transitions


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


class FinalTransitions(Transitions):
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
        for name, value in settlement_fields(settlement).items():
            update += f", {name} = :{name}"
            values[f":{name}"] = value
        return update, condition + " AND credit_claim = :reservation_claim", values, settlement_requests(settlement)

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
