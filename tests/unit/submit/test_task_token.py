"""A job file's `task_token`: told to the caller before anything else in the file is checked (so a
refusal of the rest still answers the waiting task), refused when it cannot be a token or when the
stack may answer no caller, and never quoted in a refusal's message."""

from __future__ import annotations

import json

import pytest
from vary_region.core.errors import JobRejected
from vary_region.submit.job_spec import Limits, parse_inline_job, parse_job_spec
from vary_region.submit.task_token import MAX_TOKEN_CHARS, TaskTokens

TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAQ-the-secret-token"


class Recorded:
    def __init__(self) -> None:
        self.tokens: list[tuple[str, str]] = []

    def set_task_token(self, job_id: str, token: str) -> bool:
        self.tokens.append((job_id, token))
        return True


def test_the_token_is_told_before_the_rest_of_the_file_is_refused() -> None:
    told: list[str] = []
    raw = json.dumps({"task_token": TOKEN, "prompt": "no parent"}).encode()

    with pytest.raises(JobRejected) as refused:
        parse_job_spec(raw, Limits(), told.append)

    assert refused.value.error.code == "PARENT_TASK_ID_MISSING"
    assert told == [TOKEN]


def test_an_inline_job_tells_its_token_too() -> None:
    told: list[str] = []
    raw = json.dumps({"task_token": TOKEN, "parent_task_id": "p1", "mask": "s3://b/inbox/m.png"}).encode()

    parse_inline_job(raw, Limits(), 1024, told.append)

    assert told == [TOKEN]


@pytest.mark.parametrize(
    "value", [12, "", "x" * (MAX_TOKEN_CHARS + 1), "line\nbreak"], ids=["number", "empty", "too-long", "control"]
)
def test_a_value_that_cannot_be_a_token_is_refused_without_quoting_it(value: object) -> None:
    raw = json.dumps({"task_token": value, "parent_task_id": "p1"}).encode()

    with pytest.raises(JobRejected) as refused:
        parse_job_spec(raw, Limits(), lambda token: None)

    assert refused.value.error.code == "TASK_TOKEN_INVALID"
    assert str(value) not in refused.value.error.message or value == ""


def test_with_no_caller_state_machines_a_token_is_refused_and_not_kept() -> None:
    store = Recorded()

    with pytest.raises(JobRejected) as refused:
        TaskTokens((), store).record("job-1", TOKEN)

    assert refused.value.error.code == "TASK_TOKEN_NOT_ALLOWED"
    assert TOKEN not in refused.value.error.message
    assert store.tokens == []


def test_with_caller_state_machines_the_token_is_kept_on_the_job() -> None:
    store = Recorded()

    TaskTokens(("arn:aws:states:eu-west-1:123456789012:stateMachine:caller",), store).record("job-1", TOKEN)

    assert store.tokens == [("job-1", TOKEN)]
