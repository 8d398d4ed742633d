"""The completion queue: where the webhook and the reconciler hand a finished task over to the
completion worker, which confirms it through Fetch, copies the images and completes the job.

The webhook must answer the provider in well under API Gateway's 29 s, and copying five images
can take longer than that; behind a queue the work gets its own timeout, retries and DLQ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_FIELD = "complete_job"
_BATCH = 10  # SendMessageBatch's limit
_DELAY_LIMIT = 900  # SQS's longest DelaySeconds


@dataclass(frozen=True)
class CompletionRequest:
    """Bring one job's finished (or failed) task home; `attempt` counts the tries so far."""

    job_id: str
    task_id: str
    attempt: int = 1

    def to_message(self) -> str:
        return json.dumps(
            {_FIELD: {"job_id": self.job_id, "task_id": self.task_id, "attempt": self.attempt}}, allow_nan=False
        )

    @classmethod
    def from_message(cls, body: Any) -> CompletionRequest | None:
        """None for a body that is not a completion request (it is dropped, not retried)."""
        request = body.get(_FIELD) if isinstance(body, dict) else None
        if not isinstance(request, dict):
            return None
        job_id, task_id, attempt = request.get("job_id"), request.get("task_id"), request.get("attempt", 1)
        if not (isinstance(job_id, str) and job_id and isinstance(task_id, str) and task_id):
            return None
        return cls(job_id, task_id, attempt if isinstance(attempt, int) and attempt > 0 else 1)


class CompletionQueueError(Exception):
    """Some requests could not be put on the queue (SQS refused them twice)."""


class CompletionQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url

    def request(self, request: CompletionRequest, delay_seconds: int = 0) -> None:
        self._sqs.send_message(
            QueueUrl=self._queue_url,
            MessageBody=request.to_message(),
            DelaySeconds=max(0, min(_DELAY_LIMIT, delay_seconds)),
        )

    def request_many(self, requests: Sequence[CompletionRequest]) -> None:
        """Ten to a call; entries SQS fails (a partial batch failure) are sent once more."""
        for start in range(0, len(requests), _BATCH):
            pending = {str(i): r for i, r in enumerate(requests[start : start + _BATCH])}
            for _ in range(2):
                answer = self._sqs.send_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[{"Id": key, "MessageBody": r.to_message()} for key, r in pending.items()],
                )
                pending = {f["Id"]: pending[f["Id"]] for f in answer.get("Failed", []) if f.get("Id") in pending}
                if not pending:
                    break
            if pending:
                raise CompletionQueueError(f"{len(pending)} completion requests were not queued")
