"""The parent task, read before any credit is spent: is it an upscale that finished, and how big is it?

Fetch (free) says what the task is, read into the same TaskResult as a webhook. Only a finished
upscale (one `image_url`, task type "upscale#N", with or without `status`) can be inpainted; an
unknown task, a grid, a failed task are rejected, one still running makes the job wait. The parent
image's size is read from its first bytes: a ranged GET under the same URL policy and pinned
connection as the result copies, stopped as soon as the header is parsed, never a download of the
whole picture.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vary_region.core.errors import ImageCopyError, JobRejected, ProviderRejected, ProviderUnavailable, UnsafeImageUrl
from vary_region.image_hosts.url_policy import AddressRule, Resolver, check_image_url, is_public_address, resolve_host
from vary_region.provider.task_result import MalformedTaskPayload, TaskResult, TaskState
from vary_region.settings import ImageOrigin

if TYPE_CHECKING:
    import requests

    from vary_region.image_hosts.pinned_http import PinnedAddressAdapter

HEADER_BYTES = 64 * 1024
# Answers of Fetch about a task that does not exist (APIFRAME: 404; some compatible servers: 400).
_NOT_FOUND = frozenset({400, 404, 422})


@dataclass(frozen=True)
class Parent:
    """A finished upscale task, and its image's real size."""

    task_id: str
    image_url: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


class ParentNotReady(Exception):
    """The job must wait: the parent is still running, or Fetch or its image host is unreachable.

    `reason` is recorded on the held job (`held_reason`).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


FetchTask = Callable[[str], TaskResult]


class ParentReader:
    def __init__(
        self,
        fetch: FetchTask,
        allowed_origins: Sequence[ImageOrigin],
        *,
        resolver: Resolver = resolve_host,
        address_allowed: AddressRule = is_public_address,
        session: requests.Session | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._fetch = fetch
        self._allowed = tuple(allowed_origins)
        self._resolver = resolver
        self._address_allowed = address_allowed
        self._given_session = session
        self._timeout = timeout_seconds

    @functools.cached_property
    def _transport(self) -> tuple[requests.Session, PinnedAddressAdapter]:
        from vary_region.image_hosts.pinned_http import pinned_session

        return pinned_session(self._given_session, pool_maxsize=2)

    def read(self, task_id: str, *, own_task: bool = False) -> Parent:
        """The parent, or JobRejected (nothing to inpaint), or ParentNotReady (wait and ask again).

        own_task: the task is one the job itself paid for (a chain's earlier stage), not an id the
        user gave. RequestNotSent (the API key could not be read) passes through: the event is retried.
        """
        image_url = _finished_upscale_url(self._task(task_id, own_task))
        width, height = self._image_size(image_url)
        return Parent(task_id=task_id, image_url=image_url, width=width, height=height)

    def read_grid(self, task_id: str, *, own_task: bool = False) -> Parent:
        """A finished imagine task (the parent of a job given `index`), with its grid's size."""
        grid_url = _finished_grid_url(self._task(task_id, own_task))
        width, height = self._image_size(grid_url)
        return Parent(task_id=task_id, image_url=grid_url, width=width, height=height)

    def _task(self, task_id: str, own_task: bool) -> TaskResult:
        try:
            task = self._fetch(task_id)
        except ProviderRejected as exc:
            if exc.status in _NOT_FOUND and own_task:
                # The provider accepted this task for the job: it exists, whatever Fetch says now.
                raise ParentNotReady(
                    "PARENT_UNAVAILABLE", f"Fetch answered {exc.status} about the job's own task {task_id}"
                ) from None
            if exc.status in _NOT_FOUND:
                raise JobRejected(
                    "PARENT_NOT_FOUND", f"APIFRAME knows no task {task_id!r} (Fetch answered {exc.status})"
                ) from None
            raise
        except ProviderUnavailable as exc:
            raise ParentNotReady("PARENT_UNAVAILABLE", f"the parent could not be read through Fetch: {exc}") from None
        except MalformedTaskPayload:
            raise ParentNotReady("PARENT_UNAVAILABLE", "Fetch answered without a task") from None
        if task.task_id != task_id:
            # An answer about another task says nothing about this one.
            raise ParentNotReady("PARENT_UNAVAILABLE", "Fetch answered without this task")
        if task.state is TaskState.FAILED:
            raise JobRejected("PARENT_FAILED", f"the parent task {task_id} failed; start from a finished task instead")
        if task.reported_running:
            status = task.provider_status
            raise ParentNotReady("PARENT_RUNNING", f"the parent task {task_id} is still running ({status})")
        return task

    def _image_size(self, url: str) -> tuple[int, int]:
        from vary_region.image_hosts.pinned_http import read_prefix
        from vary_region.submit.mask_file import image_header_size

        try:
            target = check_image_url(url, self._allowed, self._resolver, address_allowed=self._address_allowed)
        except UnsafeImageUrl as exc:
            raise JobRejected("PARENT_IMAGE_UNREADABLE", f"the parent image URL was refused: {exc}") from None
        except ImageCopyError as exc:  # its host's name could not be looked up just now
            raise ParentNotReady("PARENT_UNAVAILABLE", f"the parent image could not be read: {exc}") from None
        session, adapter = self._transport
        try:
            size, _ = read_prefix(
                session, adapter, target, image_header_size, max_bytes=HEADER_BYTES, timeout=self._timeout
            )
        except ImageCopyError as exc:
            if exc.permanent:
                raise JobRejected("PARENT_IMAGE_UNREADABLE", f"the parent image could not be read: {exc}") from None
            raise ParentNotReady("PARENT_UNAVAILABLE", f"the parent image could not be read: {exc}") from None
        except Exception as exc:  # connection refused or reset, timeouts: the host may be back soon
            raise ParentNotReady(
                "PARENT_UNAVAILABLE", f"the parent image could not be read ({type(exc).__name__})"
            ) from None
        if size is None:
            raise JobRejected(
                "PARENT_IMAGE_UNREADABLE",
                f"the parent image's first {HEADER_BYTES} bytes hold no PNG, JPEG or WebP header",
            )
        return size


def _finished_grid_url(task: TaskResult) -> str:
    if task.image_url and not task.grid_url:
        raise JobRejected(
            "PARENT_NOT_GRID",
            f"the parent task {task.task_id} is an upscale, not an imagine grid: drop `index` to inpaint it directly",
        )
    if task.grid_url and task.grid_url.strip():
        return task.grid_url.strip()
    _refuse_if_finished_without_image(task)
    raise ParentNotReady("PARENT_RUNNING", f"the parent task {task.task_id} has no grid yet")


def _finished_upscale_url(task: TaskResult) -> str:
    if task.task_type == "imagine" or ((task.grid_url or task.image_urls) and not task.image_url):
        raise JobRejected(
            "PARENT_IS_GRID",
            f"the parent task {task.task_id} is an imagine grid, not an upscale: add `index` (1-4) to the job "
            "to upscale one of its images first, or give the upscale's task id",
        )
    if task.image_url:
        return task.image_url
    _refuse_if_finished_without_image(task)
    # Neither failed, nor finished, nor a grid, nor an image yet: at work, whatever its status says.
    raise ParentNotReady("PARENT_RUNNING", f"the parent task {task.task_id} has no image yet")


def _refuse_if_finished_without_image(task: TaskResult) -> None:
    """A task said to be finished with no image at all (a describe or blend-style task, or a shape this
    adapter does not read) will never have one: waiting for it would hold the job for nothing.
    One with some images but not the one asked for may be a partial answer, and is asked again."""
    if task.state is TaskState.FINISHED and not (task.image_url or task.grid_url or any(task.image_urls)):
        raise JobRejected(
            "PARENT_HAS_NO_IMAGE",
            f"the parent task {task.task_id} finished without an image ({task.task_type or 'task type unknown'}); "
            "start from an imagine or upscale task",
        )
