"""Jobs held back while every provider slot is taken.

A held job goes back on the submit queue as a new, delayed message instead of failing its
current one: waiting for a slot must never count towards the dead-letter threshold.
"""

from __future__ import annotations

import json
import random
from typing import Any

HELD_JOB_FIELD = "held_job"


class SubmitQueue:
    def __init__(self, sqs_client: Any, queue_url: str, delay_seconds: int) -> None:
        self._sqs = sqs_client
        self._queue_url = queue_url
        self._delay = delay_seconds

    def hold(self, key: str, delay_seconds: int | None = None) -> None:
        # Jitter spreads a burst of held jobs so they do not all come back at the same moment.
        base = self._delay if delay_seconds is None else delay_seconds
        delay = min(900, base + random.randint(0, max(1, base // 2)))
        self._sqs.send_message(
            QueueUrl=self._queue_url,
            MessageBody=json.dumps({HELD_JOB_FIELD: {"key": key}}, allow_nan=False),
            DelaySeconds=delay,
        )

    def wake(self, key: str) -> None:
        """Hand a chained job's next stage to the submit function now (its stage before finished)."""
        self._sqs.send_message(
            QueueUrl=self._queue_url, MessageBody=json.dumps({HELD_JOB_FIELD: {"key": key}}, allow_nan=False)
        )


def held_job_key(message: Any) -> str | None:
    held = message.get(HELD_JOB_FIELD) if isinstance(message, dict) else None
    key = held.get("key") if isinstance(held, dict) else None
    return key if isinstance(key, str) else None
