"""A job table item read back as a Job (DynamoDB's numbers made plain, and the stage a claim is for
inferred on items written before chains existed), and the item's record of the job's credits."""

from __future__ import annotations

from typing import Any

from vary_region.core.credits import CreditReservation, Settlement
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.job import Job, JobStatus
from vary_region.core.stages import CHAIN, JobStage, parse_stage
from vary_region.core.strict_json import read_stored
from vary_region.store.schema import plain


def job_from_item(item: dict[str, Any]) -> Job:
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
        result=plain(item.get("result")),
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


def reservation_from_item(item: dict[str, Any]) -> CreditReservation | None:
    reserved = item.get("credits_reserved")
    if not isinstance(reserved, dict) or not item.get("credit_day") or not item.get("credit_claim"):
        return None  # a job claimed before the ledger existed (or never claimed): nothing to settle
    credits = tuple((stage, int(reserved[stage.value])) for stage in CHAIN if stage.value in reserved)
    return CreditReservation(credits, str(item["credit_day"]), str(item["credit_month"]), str(item["credit_claim"]))


def reservation_fields(reservation: CreditReservation) -> dict[str, Any]:
    """The job item's record of its reservation. The token is kept apart from `submit_claim`, which
    each later stage's claim replaces."""
    return {
        "credits_reserved": {stage.value: credits for stage, credits in reservation.credits},
        "credit_day": reservation.day,
        "credit_month": reservation.month,
        "credit_claim": reservation.claim,
    }


def settlement_fields(settlement: Settlement) -> dict[str, Any]:
    return {
        "credits_spent": {stage.value: credits for stage, credits in settlement.spent},
        "credits_returned": settlement.returned,
    }


def _claim_stage(item: dict[str, Any], stage: JobStage) -> JobStage | None:
    """The stage the claim belongs to. A claim written before chains existed (no `stage` on the item)
    is the job's one inpaint stage's; a chain's later stage given back has none."""
    if not item.get("submit_claim"):
        return None
    if item.get("claim_stage"):
        return parse_stage(item["claim_stage"], stage)
    return stage if "stage" not in item else None
