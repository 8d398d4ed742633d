"""Each stage checked before it is paid: the parent read (Fetch, and its image's size from the
first bytes), the mask fitted to it or, in a chain from a prompt, checked against the aspect
ratio. What is left is a plan: what to send once the stage's claim is won.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vary_region.core.errors import JobRejected
from vary_region.core.job import Job
from vary_region.core.stages import JobStage
from vary_region.observability import logger
from vary_region.provider.stage_requests import ImagineRequest, InpaintRequest, StageRequest, UpscaleRequest
from vary_region.submit.job_spec import JobSpec
from vary_region.submit.mask import BinaryMask, Mask, MaskFit, fit_mask
from vary_region.submit.mask_regions import render_regions
from vary_region.submit.parent import ParentReader

# A mask file in a chain from a prompt is checked against the aspect ratio before anything is paid:
# its exact size in pixels is known only once the upscale exists (then it is scaled to it).
_RATIO_TOLERANCE = 0.02


@dataclass(frozen=True)
class StagePlan:
    """One stage, checked and ready to claim: what to send once the claim is won."""

    stage: JobStage
    first: bool
    build: Callable[[str | None, str], StageRequest]  # (webhook URL, secret) -> the paid request
    parent_image_url: str | None = None  # the inpaint's parent image, copied beside the results
    mask: BinaryMask | None = None  # the inpaint's mask, stored as results/<job-id>/mask.png

    @property
    def later(self) -> JobStage | None:
        """The stage, when it is a later stage of a chain under way; None for a job's first claim."""
        return None if self.first else self.stage


class StagePlanner:
    def __init__(self, parents: ParentReader) -> None:
        self._parents = parents

    def plan(self, stage: JobStage, first: bool, spec: JobSpec, mask: Mask | None, job: Job | None) -> StagePlan:
        """Everything free about `stage` done (parent read, mask checked and fitted); raises
        JobRejected or ParentNotReady. A chain's first stage checks the mask for the whole chain."""
        if stage is JobStage.IMAGINE:
            return self._imagine(first, spec, mask)
        if stage is JobStage.UPSCALE:
            return self._upscale(first, spec, mask, job)
        return self._inpaint(first, spec, mask, job)

    @staticmethod
    def _imagine(first: bool, spec: JobSpec, mask: Mask | None) -> StagePlan:
        assert spec.imagine is not None  # first_stage is IMAGINE only with it
        imagine = spec.imagine
        _check_mask_ratio(spec, mask, imagine.ratio)
        return StagePlan(
            JobStage.IMAGINE,
            first,
            lambda url, secret: ImagineRequest(imagine.prompt, imagine.aspect_ratio, url, secret),
        )

    def _upscale(self, first: bool, spec: JobSpec, mask: Mask | None, job: Job | None) -> StagePlan:
        grid_task = spec.parent_task_id if first else (job.task_id_of(JobStage.IMAGINE) if job else None)
        if grid_task is None or spec.index is None:
            raise JobRejected("PARENT_TASK_ID_MISSING", "the upscale stage has no imagine task to upscale")
        grid = self._parents.read_grid(grid_task, own_task=not first)
        logger.info("grid parent read", extra={"grid_width": grid.width, "grid_height": grid.height})
        if first:  # an upscale-1x is one quarter of its grid: the inpaint's size, known before paying
            _mask_at(spec, mask, (grid.width // 2, grid.height // 2), spec.mask_fit)
        index = spec.index
        return StagePlan(JobStage.UPSCALE, first, lambda url, secret: UpscaleRequest(grid_task, index, url, secret))

    def _inpaint(self, first: bool, spec: JobSpec, mask: Mask | None, job: Job | None) -> StagePlan:
        parent_task = spec.parent_task_id if first else (job.task_id_of(JobStage.UPSCALE) if job else None)
        if parent_task is None:
            raise JobRejected("PARENT_TASK_ID_MISSING", "the inpaint stage has no upscale to inpaint")
        parent = self._parents.read(parent_task, own_task=not first)
        logger.info("parent read", extra={"parent_width": parent.width, "parent_height": parent.height})
        # In a chain the mask was checked against the size the upscale was going to have; it is
        # scaled to the size it has (the same, unless the provider changed its sizes).
        binary = _mask_at(spec, mask, parent.size, MaskFit.RESIZE if spec.is_chain else spec.mask_fit)
        # A later stage sends the prompt the first claim recorded (and result.json shows), whatever
        # the job file says now.
        prompt = spec.prompt if first or job is None else job.prompt

        def inpaint(url: str | None, secret: str) -> InpaintRequest:
            return InpaintRequest(parent_task, binary.to_data_url(), prompt, url, secret)

        return StagePlan(JobStage.INPAINT, first, inpaint, parent_image_url=parent.image_url, mask=binary)


def _mask_at(spec: JobSpec, mask: Mask | None, size: tuple[int, int], fit: MaskFit) -> BinaryMask:
    if spec.mask_regions is not None:
        return render_regions(spec.mask_regions, size)
    if mask is None:  # JobInputs returns a job without a mask file only when it has regions
        raise JobRejected("MASK_MISSING", "the job has neither a mask file nor mask regions")
    return fit_mask(mask, size, fit)


def _check_mask_ratio(spec: JobSpec, mask: Mask | None, ratio: float) -> None:
    if mask is None:
        return  # regions in fractions (job_spec refuses pixels here): they fit any size
    mask_ratio = mask.width / mask.height
    if abs(mask_ratio - ratio) > _RATIO_TOLERANCE * ratio:
        aspect = spec.imagine.aspect_ratio if spec.imagine else "1:1"
        raise JobRejected(
            "MASK_SIZE_MISMATCH",
            f"the mask is {mask.width}x{mask.height}, which is not the {aspect} aspect ratio of the image "
            "the chain makes; draw it at that ratio, or give the mask as regions in fractions",
        )
