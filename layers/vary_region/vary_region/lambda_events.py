"""The two Lambda event shapes the functions receive, as typed models, and the answers Lambda
expects back: an API Gateway HTTP API request (payload format 2.0) and an SQS batch.

Powertools' Event Handler and event data classes parse these too, but importing either loads every
resolver and event class Powertools has (AppSync, Bedrock, Kafka, Kinesis, ...), a sixth of
`import boto3` on every cold start for two shapes this small (issue #5, `bench/import_bench.py`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vary_region.core.strict_json import loads


class MalformedEvent(ValueError):
    """The event is not the shape this function is wired to receive."""


class QueueBatchFailed(RuntimeError):
    """Every message of an SQS batch failed.

    Raised rather than answered with a full failure list (SQS redelivers the same either way) so the
    invocation counts in Lambda's Errors metric, and an outage reaches the errors alarm at once,
    not only the dead-letter queue five receives later. Powertools' batch utility does the same.
    """


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP API request: its method, the path parameters of its route, headers and raw body."""

    method: str
    path_parameters: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def from_http_api_event(cls, event: Any) -> HttpRequest:
        if not isinstance(event, dict) or event.get("version") != "2.0":
            raise MalformedEvent("not an HTTP API (payload format 2.0) event")
        http = (event.get("requestContext") or {}).get("http") or {}
        text = event.get("body") or ""
        # Raw bytes: a body that is not UTF-8 arrives base64-encoded and must still reach the
        # webhook's secret check unchanged.
        body = base64.b64decode(text) if event.get("isBase64Encoded") else text.encode("utf-8")
        return cls(
            method=str(http.get("method", "")).upper(),
            path_parameters=dict(event.get("pathParameters") or {}),
            headers=dict(event.get("headers") or {}),
            body=body,
        )


def http_response(status: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON answer in the shape API Gateway turns into the HTTP response."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(payload, separators=(",", ":"), allow_nan=False),
        "isBase64Encoded": False,
    }


@dataclass(frozen=True)
class QueueMessage:
    """One SQS message of a batch: the id Lambda reports a failure by, and the message body."""

    message_id: str
    body: str

    def json_body(self) -> Any:
        """The body as strict JSON; JsonRefused (a ValueError) when it is not (NaN, nesting past the limit)."""
        return loads(self.body)


def is_sqs_batch(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records or not isinstance(records[0], dict):
        return False
    return records[0].get("eventSource") == "aws:sqs"


def queue_messages(event: Any) -> list[QueueMessage]:
    if not is_sqs_batch(event):
        raise MalformedEvent("not an SQS batch event")
    return [QueueMessage(message_id=str(r["messageId"]), body=str(r.get("body", ""))) for r in event["Records"]]


def partial_batch_response(failed: Iterable[QueueMessage]) -> dict[str, Any]:
    """The answer that sends only the failed messages back to the queue (`ReportBatchItemFailures`)."""
    return {"batchItemFailures": [{"itemIdentifier": message.message_id} for message in failed]}


def process_queue_batch(
    messages: Sequence[QueueMessage],
    handle: Callable[[QueueMessage], None],
    on_failure: Callable[[QueueMessage], None],
) -> dict[str, Any]:
    """Handle each message; only the ones that raised go back to the queue (and, after
    maxReceiveCount, to the DLQ), the rest of the batch is done. `on_failure` runs inside the
    `except`, so it can log the exception. A batch whose every message failed raises QueueBatchFailed."""
    failed = []
    for message in messages:
        try:
            handle(message)
        except Exception:
            on_failure(message)
            failed.append(message)
    if failed and len(failed) == len(messages):
        raise QueueBatchFailed(f"all {len(messages)} messages of the batch failed")
    return partial_batch_response(failed)
