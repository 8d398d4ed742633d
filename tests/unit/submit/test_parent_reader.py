"""Reading a parent before paying: which troubles reject the job, and which only make it wait.

A rejection is for good (the job is REJECTED, a chain's later stage FAILED with its paid stages
lost), so only an answer that the parent can never work rejects: a user's id that APIFRAME does
not know, a name that does not exist. A lookup that got no answer, and any "not found" about a
task the job itself paid for, make the job wait (ParentNotReady, held PARENT_UNAVAILABLE).
"""

from __future__ import annotations

import socket

import pytest
from vary_region.core.errors import JobRejected, ProviderRejected
from vary_region.provider.task_result import TaskResult, TaskState
from vary_region.settings import DEFAULT_IMAGE_HOSTS, ImageOrigin
from vary_region.submit.parent import ParentNotReady, ParentReader

ORIGINS = tuple(ImageOrigin.parse(h) for h in DEFAULT_IMAGE_HOSTS.split(","))
UPSCALE = TaskResult(
    task_id="up-1", state=TaskState.FINISHED, task_type="upscale#1", image_url="https://cdn.apiframe.pro/up-1.png"
)


def raised(read) -> Exception:
    """What read() raised; a read that raised nothing, or not what the test expects, fails on an assertion."""
    try:
        read()
    except Exception as exc:
        return exc
    raise AssertionError("the read raised nothing")


def fetch_answering(status: int):
    def fetch(task_id: str) -> TaskResult:
        raise ProviderRejected(status, "task not found")

    return fetch


@pytest.mark.parametrize("status", [400, 404, 422])
def test_given_fetch_not_found_about_a_users_parent_when_read_then_rejected_parent_not_found(status):
    reader = ParentReader(fetch_answering(status), ORIGINS)

    errors = [raised(lambda: reader.read("users-parent")), raised(lambda: reader.read_grid("users-grid"))]

    assert [(type(e), e.error.code) for e in errors if isinstance(e, JobRejected)] == [
        (JobRejected, "PARENT_NOT_FOUND")
    ] * 2, errors


@pytest.mark.parametrize("status", [400, 404, 422])
def test_given_fetch_not_found_about_the_jobs_own_task_when_read_then_the_job_waits(status):
    reader = ParentReader(fetch_answering(status), ORIGINS)

    errors = [
        raised(lambda: reader.read("own-upscale", own_task=True)),
        raised(lambda: reader.read_grid("own-imagine", own_task=True)),
    ]

    assert [e.reason for e in errors if isinstance(e, ParentNotReady)] == ["PARENT_UNAVAILABLE"] * 2, errors
    assert str(status) in str(errors[0])


def test_given_fetch_refusing_for_another_reason_about_the_jobs_own_task_when_read_then_it_passes_through():
    reader = ParentReader(fetch_answering(403), ORIGINS)

    assert isinstance(raised(lambda: reader.read("own-upscale", own_task=True)), ProviderRejected)


def failing_lookup(code: int):
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(code, "simulated")

    return resolver


def test_given_the_parent_image_host_not_looked_up_just_now_when_read_then_the_job_waits():
    reader = ParentReader(lambda task_id: UPSCALE, ORIGINS, resolver=failing_lookup(socket.EAI_AGAIN))

    error = raised(lambda: reader.read("up-1"))

    assert isinstance(error, ParentNotReady) and error.reason == "PARENT_UNAVAILABLE", error


def test_given_the_parent_image_host_that_does_not_exist_when_read_then_rejected_unreadable():
    reader = ParentReader(lambda task_id: UPSCALE, ORIGINS, resolver=failing_lookup(socket.EAI_NONAME))

    error = raised(lambda: reader.read("up-1"))

    assert isinstance(error, JobRejected) and error.error.code == "PARENT_IMAGE_UNREADABLE", error
