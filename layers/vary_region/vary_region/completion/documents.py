"""result.json: what a completed job produced, its timings and, per stage, its credits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vary_region.core.job import Job, parse_timestamp

if TYPE_CHECKING:
    from vary_region.completion.image_copier import CopiedImage
    from vary_region.core.credits import Settlement


def credits_document(settlement: Settlement) -> dict[str, Any]:
    """result.json's account of the job's credits, per stage."""
    return {
        "reserved": {stage.value: credits for stage, credits in settlement.reservation.credits},
        "spent": {stage.value: credits for stage, credits in settlement.spent},
        "returned": settlement.returned,
    }


def result_document(
    job: Job,
    task_id: str,
    images: list[CopiedImage],
    completed_at: str,
    *,
    tasks: list[dict[str, Any]] | None = None,
    parent: CopiedImage | None = None,
    cut: bool = False,
) -> dict[str, Any]:
    """cut: the four images were cut from the grid (a grid stage's result that was the grid alone)."""
    document: dict[str, Any] = {
        "job_id": job.job_id,
        "status": "COMPLETED",
        "task_id": task_id,
        "parent_task_id": job.parent_task_id,
        "prompt": job.prompt,
        "images": {
            image.name: {
                "key": image.key,
                "source_url": image.source_url,
                "bytes": image.size,
                "content_type": image.content_type,
            }
            for image in images
        },
        "timings": {
            "received_at": job.created_at,
            "submitted_at": job.submitted_at or job.submit_claimed_at,
            "completed_at": completed_at,
            "duration_seconds": _seconds_between(job.created_at, completed_at),
        },
        "metadata": job.metadata,
    }
    if tasks is not None:
        document["tasks"] = tasks
    if cut:
        document["variants_cut_from_grid"] = True
    if parent is not None:
        document["parent"] = {"key": parent.key, "source_url": parent.source_url, "bytes": parent.size}
    return document


def _seconds_between(start: str | None, end: str) -> float | None:
    if not start:
        return None
    return round((parse_timestamp(end) - parse_timestamp(start)).total_seconds(), 3)
