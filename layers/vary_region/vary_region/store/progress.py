"""A claimed job under way: the provider's reports (progress, the final signal), the next stage of
a chain opened, the reconciler's look, and the lease of the one copier of its results."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from vary_region.core.job import JobStatus, timestamp
from vary_region.core.stages import JobStage
from vary_region.store.table_io import JobTableError, lost_race
from vary_region.store.transitions import Transitions


class ProgressTransitions(Transitions):
    def record_final_signal(self, job_id: str, task_id: str, now: datetime, stage: JobStage = JobStage.INPAINT) -> bool:
        """A webhook reported the task of `stage` finished or failed: note it (and the task id, in case
        the webhook outran the submission's own write) before the completion worker confirms it."""
        return self._update(
            job_id,
            "SET task_id = :task, final_reported_at = :now, updated_at = :now",
            self._open_and_claimed() + " AND " + self._task_of_stage(stage),
            {":task": task_id, ":now": timestamp(now), ":stage": stage.value} | self._open_values(),
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
            if lost_race(exc):
                return 0
            raise JobTableError(str(exc)) from exc
        return int(response["Attributes"]["copy_failures"])
