"""A job's `task_token`: a Step Functions callback task (`.waitForTaskToken`) waiting for the job.

Read from the job file before anything else in it is checked, and kept on the job's item at once:
whatever ends the job afterwards (a refusal of its mask, a provider failure, its results) is a
write of that item, and the publisher answers the token from the table's stream (publisher/
task_answer.py). A token is a secret (whoever holds it can close the caller's task): it is never
logged, never in an event, result.json or error.json.

A token is opaque: nothing in it names its state machine, so which workflow sent it cannot be
checked here. The stack answers only the state machines CallerStateMachineArns names (its IAM);
with none named nobody can be answered, and a token is refused (TASK_TOKEN_NOT_ALLOWED) before
anything is paid, rather than leaving a workflow waiting for an answer that cannot come.
"""

from __future__ import annotations

from typing import Any, Protocol

from vary_region.core.errors import JobRejected

TASK_TOKEN_FIELD = "task_token"  # noqa: S105 - the field's name, not a token
# SendTaskSuccess's taskToken: 1 to 2048 characters (the Step Functions API reference).
MAX_TOKEN_CHARS = 2048


class TokenStore(Protocol):
    def set_task_token(self, job_id: str, token: str) -> bool: ...


def read_task_token(document: dict[str, Any]) -> str | None:
    """The job file's `task_token`, or None; TASK_TOKEN_INVALID when it cannot be one (the message
    never quotes it)."""
    value = document.get(TASK_TOKEN_FIELD)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_CHARS or not value.isprintable():
        raise JobRejected(
            "TASK_TOKEN_INVALID",
            f"`{TASK_TOKEN_FIELD}` must be a callback task's token ($$.Task.Token): "
            f"a string of 1 to {MAX_TOKEN_CHARS} printable characters",
        )
    return value


class TaskTokens:
    """Keeps a job's token on its item, when this stack may answer it at all."""

    def __init__(self, caller_state_machine_arns: tuple[str, ...], store: TokenStore) -> None:
        self._callers = caller_state_machine_arns
        self._store = store

    def record(self, job_id: str, token: str) -> None:
        if not self._callers:
            raise JobRejected(
                "TASK_TOKEN_NOT_ALLOWED",
                f"this stack answers no Step Functions workflow (its CallerStateMachineArns is empty), "
                f"so a job may not carry a `{TASK_TOKEN_FIELD}`",
            )
        self._store.set_task_token(job_id, token)
