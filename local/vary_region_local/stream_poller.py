"""What Lambda's DynamoDB Streams event source mapping does, on one machine: read each shard of the
table's stream in order, hand batches to the function as stream events, and, when the function
reports failed records (ReportBatchItemFailures) or fails, give the batch back from the first failed
record and try again. Nothing is skipped: a record is passed on only once the function took it.

Where moto differs from DynamoDB: moto keeps one shard and never closes it, and it writes a
key-only record before the first write of an item is applied (the publisher ignores items without
`status`). Lambda's bisection and on-failure destination are not reproduced: a record that keeps
failing is retried here until the stack stops, and its failures are counted in `errors`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def stream_event(records: list[dict[str, Any]], stream_arn: str, region: str) -> dict[str, Any]:
    """The batch as Lambda delivers it (the records' own fields, plus the mapping's source fields)."""
    return {
        "Records": [
            {
                "eventID": record.get("eventID"),
                "eventName": record.get("eventName"),
                "eventVersion": record.get("eventVersion", "1.1"),
                "eventSource": "aws:dynamodb",
                "awsRegion": region,
                "dynamodb": record.get("dynamodb", {}),
                "eventSourceARN": stream_arn,
            }
            for record in records
        ]
    }


class StreamPoller:
    def __init__(
        self,
        streams: Any,
        stream_arn: str,
        region: str,
        invoke: Callable[[dict[str, Any]], Any],
        *,
        batch_size: int = 100,
        idle_seconds: float = 0.05,
        retry_after_seconds: float = 0.2,
    ) -> None:
        self._streams = streams  # a boto3 dynamodbstreams client
        self._arn = stream_arn
        self._region = region
        self._invoke = invoke
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._retry_after = retry_after_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-poller", daemon=True)
        self.errors: list[str] = []
        # Tests turn failures on to prove that a record the function could not take comes back.
        self.fail_next_invocations = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        shard = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = self._streams.get_shard_iterator(
            StreamArn=self._arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        pending: list[dict[str, Any]] = []  # read, not yet taken by the function
        while not self._stopping.is_set():
            if len(pending) < self._batch_size and iterator:
                try:
                    answer = self._streams.get_records(ShardIterator=iterator, Limit=self._batch_size)
                except Exception as exc:  # the stack is stopping, or moto hiccuped: read again
                    self.errors.append(f"get_records: {type(exc).__name__}: {exc}")
                    self._stopping.wait(self._retry_after)
                    continue
                pending += answer.get("Records", [])
                iterator = answer.get("NextShardIterator") or iterator
            if not pending:
                self._stopping.wait(self._idle)
                continue
            batch = pending[: self._batch_size]
            taken = self._deliver(batch)
            pending = pending[taken:]
            if taken < len(batch):
                self._stopping.wait(self._retry_after)

    def _deliver(self, batch: list[dict[str, Any]]) -> int:
        """How many records, from the start of the batch, the function took."""
        try:
            if self.fail_next_invocations > 0:
                self.fail_next_invocations -= 1
                raise RuntimeError("injected failure: the function died before it could publish")
            response = self._invoke(stream_event(batch, self._arn, self._region))
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return 0
        failures = (response or {}).get("batchItemFailures") or [] if isinstance(response, dict) else []
        failed = {str(failure.get("itemIdentifier")) for failure in failures}
        for position, record in enumerate(batch):
            if str(record.get("dynamodb", {}).get("SequenceNumber")) in failed:
                return position  # Lambda goes on from the first failed record
        return len(batch)
