"""Make moto's DynamoDB behave like DynamoDB under concurrency, for the local stack.

moto runs a TransactWriteItems by snapshotting each table it touches and, when a condition
fails, putting the snapshot back: every write that another request made to that table in the
meantime is silently lost. The pipeline takes a provider slot in a transaction while webhooks
update other jobs, so on a busy local stack a held-back job could erase another job's completion.
Real DynamoDB isolates transactions; running moto's DynamoDB requests one at a time does too.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_applied = False
_dynamodb_lock = threading.RLock()


def serialise_dynamodb_requests() -> None:
    global _applied
    if _applied:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _dynamodb_lock:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _applied = True
