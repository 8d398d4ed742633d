"""The grammar every job transition is written in: the condition fragments the transitions are
phrased in, and the one conditional update each of them is (with the provider slot it gives back and
the ledger items it moves, in the same transaction).

The transitions themselves, by the job's lifecycle: job_table.py (a received job: received,
waiting, held), claims.py (claim, give back, submitted, ambiguous), progress.py (final signal,
progress, next stage, copy lease), final_states.py (completed, failed, rejected). JobTable is all of
them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from vary_region.core.credits import BudgetPolicy
from vary_region.core.stages import JobStage
from vary_region.store.provider_slots import ProviderSlots
from vary_region.store.table_io import transact, update_item, update_request


class Transitions:
    # Set by JobTable.__init__.
    _table: Any  # a boto3 DynamoDB Table resource
    _ttl: timedelta
    _budget: BudgetPolicy
    _slots: ProviderSlots

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
        lost race (table_io).

        release_slot: the update ends the job's claim, so the provider slot it holds (if any) is
        given back in the same transaction.
        also: unconditional updates of other items (the credit ledger's) made in the same
        transaction, so they happen exactly when the job's update does.
        """
        also = also or []
        if release_slot:
            update = update + (", holds_slot" if " REMOVE " in update else " REMOVE holds_slot")
            held = update_request(job_id, update, condition + " AND holds_slot = :yes", values | {":yes": True})
            job_lost, counter_empty, *_ = transact(self._table, held, self._slots.give_back(), *also)
            if not job_lost and not counter_empty:
                return True
            # No slot held, a lost race, or a counter already at zero: the plain update decides.
        if also:
            job_lost, *_ = transact(self._table, update_request(job_id, update, condition, values), *also)
            return not job_lost
        return update_item(self._table, update_request(job_id, update, condition, values))
