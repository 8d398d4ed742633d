"""What Lambda's SQS event source mapping does, on one machine: long-poll the queue, hand batches
to the function as SQS events, delete what succeeded, and let reported failures come back."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


class SqsPoller:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        region: str,
        invoke: Callable[[dict[str, Any]], Any],
        *,
        workers: int = 2,
        batch_size: int = 10,
        retry_after_seconds: int = 2,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._region = region
        self._invoke = invoke
        self._batch_size = batch_size
        self._retry_after = retry_after_seconds
        self._stopping = threading.Event()
        self._running = threading.Event()  # cleared: the mapping is disabled, messages wait in the queue
        self._running.set()
        self._threads = [
            threading.Thread(target=self._run, name=f"sqs-poller-{i}", daemon=True) for i in range(workers)
        ]
        self.errors: list[str] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def pause(self) -> None:
        """Like disabling the event source mapping: the queue keeps its messages until resume()."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._running.wait(0.2):
                continue
            try:
                self._poll_once()
            except Exception as exc:  # keep polling, like the event source mapping does
                self._record_error(exc)
                self._stopping.wait(0.5)

    def _record_error(self, exc: Exception) -> None:
        # Visible in the stack's console, as a failed invocation would be in CloudWatch Logs.
        self.errors.append(f"{type(exc).__name__}: {exc}")
        queue = self._queue_url.rsplit("/", 1)[-1]
        print(f"invocation from queue {queue} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def _poll_once(self) -> None:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return
        try:
            result = self._invoke(sqs_event(messages, self._queue_arn, self._region))
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        except Exception as exc:
            self._record_error(exc)
            failed = {m["MessageId"] for m in messages}  # a crashed invocation fails the whole batch
        for message in messages:
            if message["MessageId"] in failed:
                self._sqs.change_message_visibility(
                    QueueUrl=self._queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self._retry_after,
                )
            else:
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
