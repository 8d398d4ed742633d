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
    elif has_images or status == "finished":
        state = TaskState.FINISHED
    else:
        state = TaskState.RUNNING
    grid = payload.get("original_image_url")
    return TaskResult(
        task_id=task_id.strip(),
        state=state,
        provider_status=status,
        percentage=_percentage(payload.get("percentage")),
        grid_url=grid if isinstance(grid, str) and grid else None,
        image_urls=tuple(u for u in image_urls if isinstance(u, str)),
        error_message=_error_message(payload) if state is TaskState.FAILED else None,
    )


def _percentage(value: Any) -> int | None:
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
