"""What APIFRAME says about a task, from a webhook body or a Fetch response.

The provider documents a finished payload without `status`, percentages as strings, and leaves
the failed shape undocumented, so the rule is deliberately loose: `image_urls` present or
status "finished" means finished, "failed" means failed, anything else is still running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

INPAINT_IMAGES = 4
# The provider's documented statuses of a task that is not done yet.
RUNNING_STATUSES = frozenset({"pending", "staged", "starting", "processing", "retry", "retrying"})


class TaskState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class MalformedTaskPayload(ValueError):
    """The body is not a task payload at all (not an object, no task id)."""


@dataclass(frozen=True)
class TaskResult:
    """An APIFRAME task's state, from a webhook or a fetch, in one normalised shape."""

    task_id: str
    state: TaskState
    provider_status: str | None = None
    percentage: int | None = None
    grid_url: str | None = None
    image_urls: tuple[str, ...] = field(default_factory=tuple)
    error_message: str | None = None
    task_type: str | None = None
    image_url: str | None = None  # an upscale's one image
    reported_running: bool = False  # the provider said in so many words that the task is at work
    # v2's older pages give `result` as one URL: a grid stage's grid, with no URL of its four images
    # (the completion worker cuts them from it). Never set for a list of images that is merely short.
    one_url_result: bool = False

    def incomplete_reason(self, single_image: bool = False) -> str | None:
        """Why a finished result is not a whole one, or None when it is.

        A finished inpaint (or imagine) is a grid plus exactly four distinct images; anything else
        (one image, four without a grid, five, repeats, none) is not a result to complete a job with.
        single_image: an upscale's result, which is one `image_url`. A grid stage's result given as one
        URL is whole: that URL is the grid, the 2x2 composite of the four images.
        """
        if single_image:
            return None if self.image_url else "no image_url"
        if self.one_url_result:
            return None if self.grid_url else "no grid"
        problems = []
        if not self.grid_url:
            problems.append("no grid")
        distinct = set(self.image_urls)
        if len(self.image_urls) != INPAINT_IMAGES:
            problems.append(f"{len(self.image_urls)} images instead of {INPAINT_IMAGES}")
        elif "" in distinct:
            problems.append("image entries that are not URLs")
        elif len(distinct) != INPAINT_IMAGES or self.grid_url in distinct:
            problems.append("repeated image URLs")
        return "; ".join(problems) or None

    @property
    def result_urls(self) -> dict[str, str]:
        """Result image name -> source URL, in the order they are stored: grid, 1..4."""
        urls: dict[str, str] = {}
        if self.grid_url:
            urls["grid"] = self.grid_url
        for index, url in enumerate(self.image_urls, start=1):
            urls[str(index)] = url
        return urls


def parse_task_result(payload: Any) -> TaskResult:
    if not isinstance(payload, dict):
        raise MalformedTaskPayload("a task payload must be a JSON object")
    task_id = payload.get("task_id")
    if not isinstance(task_id, str) or not task_id.strip():
        raise MalformedTaskPayload("the payload has no task_id")
    status = payload.get("status")
    status = status.strip().lower() if isinstance(status, str) else None
    listed = payload.get("image_urls")
    image_urls: list[Any] = listed if isinstance(listed, list) else []
    has_images = len(image_urls) > 0
    if status == "failed":
        state = TaskState.FAILED
    elif status in RUNNING_STATUSES:
        # Said in so many words: a task still at work is running, whatever images it already lists.
        state = TaskState.RUNNING
    elif has_images or status == "finished" or (_text(payload.get("image_url")) and _is_upscale(payload)):
        state = TaskState.FINISHED
    else:
        state = TaskState.RUNNING
    grid = payload.get("original_image_url")
    task_type = payload.get("task_type")
    return TaskResult(
        task_id=task_id.strip(),
        state=state,
        provider_status=status,
        percentage=parse_percentage(payload.get("percentage")),
        grid_url=grid if isinstance(grid, str) and grid else None,
        # Every entry kept, a non-string as "": a list with a null in it is not four good images.
        image_urls=tuple(u.strip() if isinstance(u, str) else "" for u in image_urls),
        error_message=_error_message(payload) if state is TaskState.FAILED else None,
        task_type=task_type if isinstance(task_type, str) else None,
        image_url=_text(payload.get("image_url")),
        reported_running=status in RUNNING_STATUSES,
    )


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def parse_percentage(value: Any) -> int | None:
    """The documented form is a string ("80"); numbers and "80%" are tolerated."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip().rstrip("%").strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return max(0, min(100, int(number)))


def _error_message(payload: dict[str, Any]) -> str:
    for key in ("message", "error", "errors"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:1000]
        if isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("msg"):
            return str(value[0]["msg"])[:1000]
    return "the provider reported the task as failed without a message"


def _is_upscale(payload: dict[str, Any]) -> bool:
    """An upscale's result is its one `image_url` (task type "upscale#1".."upscale#4")."""
    task_type = payload.get("task_type")
    return isinstance(task_type, str) and task_type.strip().lower().startswith("upscale")
