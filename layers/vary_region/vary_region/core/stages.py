"""A job's chain of paid tasks: imagine -> upscale-1x -> inpaint, or the tail of it the job starts from.

Each stage is its own APIFRAME task, claimed and paid at most once per job. The job item keeps the
open stage (`stage`), the task id of each stage (`<stage>_task_id`) and each stage's webhook secret.
"""

from __future__ import annotations

from enum import StrEnum


class JobStage(StrEnum):
    IMAGINE = "imagine"
    UPSCALE = "upscale"
    INPAINT = "inpaint"

    @property
    def task_id_attribute(self) -> str:
        return f"{self.value}_task_id"

    @property
    def secret_attribute(self) -> str:
        # The inpaint stage keeps the name a plain job has always used.
        return "webhook_secret_hash" if self is JobStage.INPAINT else f"webhook_secret_hash_{self.value}"


CHAIN = (JobStage.IMAGINE, JobStage.UPSCALE, JobStage.INPAINT)


def stages_from(first: JobStage) -> tuple[JobStage, ...]:
    """The stages a job runs when it starts at `first`, in order."""
    return CHAIN[CHAIN.index(first) :]


def next_stage(stage: JobStage) -> JobStage | None:
    position = CHAIN.index(stage)
    return CHAIN[position + 1] if position + 1 < len(CHAIN) else None


def parse_stage(value: object, default: JobStage = JobStage.INPAINT) -> JobStage:
    """A stage as stored; items written before chains existed have none and are inpaint jobs."""
    try:
        return JobStage(str(value)) if value else default
    except ValueError:
        return default
