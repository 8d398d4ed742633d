"""Make moto's DynamoDB behave like DynamoDB under concurrency, for the local stack.

moto runs a TransactWriteItems by snapshotting each table it touches and, when a condition
fails, putting the snapshot back: every write that another request made to that table in the
meantime is silently lost. The pipeline takes a provider slot in a transaction while webhooks
update other jobs, so on a busy local stack a held-back job could erase another job's completion.
Real DynamoDB isolates transactions; running moto's DynamoDB requests one at a time does too.

The same snapshot breaks the table's stream: it deep-copies the stream's records (all of them, on
every transaction: slower and slower as the stream grows), and putting the snapshot back puts back
a copy of the stream, so a reader's shard iterator keeps reading a shard no write reaches any more,
while the records of the failed transaction's first updates stay in it. Here the stream is never
copied, and a failed transaction's records are taken out of it again: what a reader sees is what
DynamoDB's stream would hold, only committed writes. Stream reads are serialised with the rest.
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
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    _one_at_a_time(DynamoHandler)
    _one_at_a_time(DynamoDBStreamsHandler)
    _keep_streams_out_of_transaction_snapshots()
    _applied = True


def _one_at_a_time(handler: Any) -> None:
    """Every request to this moto service waits for the DynamoDB lock."""
    original = handler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _dynamodb_lock:
            return original(self)

    handler.call_action = call_action


def _keep_streams_out_of_transaction_snapshots() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    StreamShard.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]
    original_transaction = DynamoDBBackend.transact_write_items

    @functools.wraps(original_transaction)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        streams = {name: table.stream_shard for name, table in self.tables.items() if table.stream_shard}
        lengths = {name: len(shard.items) for name, shard in streams.items()}
        try:
            original_transaction(self, transact_items)
        except Exception:
            for name, shard in streams.items():
                del shard.items[lengths[name] :]  # the cancelled transaction never happened
                if name in self.tables:
                    self.tables[name].stream_shard = shard
            raise

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
