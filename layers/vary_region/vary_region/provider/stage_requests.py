"""The paid requests a job makes, one per stage, in the pipeline's own terms. Each provider adapter
(APIFRAME v1, v2) turns them into its own wire form.

Value types are NamedTuples, not frozen dataclasses: they are built at every cold start of the
submit function, where a frozen dataclass costs about 0.5 ms to build and a NamedTuple 0.1 ms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class InpaintRequest(NamedTuple):
    """Redraw the masked region of an upscaled parent image (Vary Region)."""

    parent_task_id: str
    mask_data_url: str
    prompt: str | None
    webhook_url: str | None
    webhook_secret: str | None

    @property
    def stage(self) -> str:
        return "inpaint"

    def __repr__(self) -> str:  # the mask and the secret never reach a log line
        return f"InpaintRequest(parent_task_id={self.parent_task_id!r}, prompt={self.prompt!r})"


class ImagineRequest(NamedTuple):
    """A new grid from a prompt: the first stage of a job that starts from a prompt."""

    prompt: str
    aspect_ratio: str
    webhook_url: str | None
    webhook_secret: str | None

    @property
    def stage(self) -> str:
        return "imagine"

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"ImagineRequest(aspect_ratio={self.aspect_ratio!r})"


@dataclass(frozen=True)  # a dataclass: its field `index` would shadow tuple.index
class UpscaleRequest:
    """One image of an imagine grid, upscaled on its own: the inpaint's parent."""

    parent_task_id: str
    index: str
    webhook_url: str | None
    webhook_secret: str | None

    @property
    def stage(self) -> str:
        return "upscale"

    def __repr__(self) -> str:
        return f"UpscaleRequest(parent_task_id={self.parent_task_id!r}, index={self.index!r})"


StageRequest = InpaintRequest | ImagineRequest | UpscaleRequest
