"""Puts state-change events on the bus: ten entries per PutEvents call, and the entries a call did not
take (FailedEntryCount: throttling, an internal error) put again with backoff."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from vary_region.observability import logger
from vary_region.publisher.state_change import StateChange
from vary_region.publisher.task_answer import TaskAnswer
from vary_region.publisher.task_callbacks import TaskCallbacks

PUT_EVENTS_LIMIT = 10


class EventPublisher:
    def __init__(
        self,
        events: Any,
        bus_name: str,
        *,
        attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._events = events  # a boto3 EventBridge client
        self._bus = bus_name
        self._attempts = attempts
        self._sleep = sleep

    def publish(self, changes: Sequence[StateChange]) -> list[StateChange]:
        """Put every change; returns those still not taken after every attempt (the caller reports them
        as failed records, so the stream gives them back)."""
        pending = list(changes)
        for attempt in range(self._attempts):
            if not pending:
                break
            if attempt:
                self._sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))
            batches = [pending[start : start + PUT_EVENTS_LIMIT] for start in range(0, len(pending), PUT_EVENTS_LIMIT)]
            pending = [change for batch in batches for change in self._put(batch)]
        if pending:
            logger.warning("events not taken by EventBridge", extra={"events_left": len(pending)})
        return pending

    def _put(self, batch: list[StateChange]) -> list[StateChange]:
        answer = self._events.put_events(Entries=[change.entry(self._bus) for change in batch])
        if not answer.get("FailedEntryCount"):
            return []
        results = answer.get("Entries") or []
        errors = sorted({f"{r.get('ErrorCode')}: {r.get('ErrorMessage')}" for r in results if r.get("ErrorCode")})
        logger.warning(
            "PutEvents did not take every entry", extra={"failed": answer["FailedEntryCount"], "errors": errors}
        )
        # Entries come back in the order sent; a failed one has an ErrorCode instead of an EventId.
        return [change for change, result in zip(batch, results, strict=False) if result.get("ErrorCode")] + batch[
            len(results) :
        ]


class StateChangePublisher:
    """A batch of the job table's stream records -> their state-change events, and the records to
    give back (their sequence numbers) when some could not be put."""

    def __init__(self, events: EventPublisher, bucket: str, callbacks: TaskCallbacks | None = None) -> None:
        self._events = events
        self._bucket = bucket
        self._callbacks = callbacks  # None: no CallerStateMachineArns, so no token can be answered

    def handle_stream_batch(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from vary_region.publisher.state_change import state_change
        from vary_region.publisher.task_answer import task_answer

        changes: list[StateChange] = []
        answers: list[TaskAnswer] = []
        broken: list[str] = []
        for record in records:
            sequence = str((record.get("dynamodb") or {}).get("SequenceNumber", ""))
            try:
                change = state_change(record, self._bucket)
                answer = task_answer(record, self._bucket)
            except Exception:  # a record this code cannot read: bisection isolates it for the destination
                logger.exception("stream record not understood", extra={"sequence": sequence})
                broken.append(sequence)
                continue
            if change is not None:
                changes.append(change)
            if answer is not None:
                answers.append(answer)
        left = self._events.publish(changes)
        unanswered = self._answer(answers)
        published = len(changes) - len(left)
        if published:
            _count("EventsPublished", published)
        if left or broken:
            _count("EventsNotPublished", len(left) + len(broken))
        failed = sorted(
            {*broken, *(change.sequence for change in left), *(answer.sequence for answer in unanswered)},
            key=lambda s: (len(s), s),
        )
        return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in failed]}

    def _answer(self, answers: list[TaskAnswer]) -> list[TaskAnswer]:
        """The waiting tasks' answers; those to send again."""
        if not answers:
            return []
        if self._callbacks is None:
            logger.warning("jobs carry task tokens but no caller may be answered (CallerStateMachineArns is empty)")
            return []
        return self._callbacks.send(answers)


def _count(name: str, value: int) -> None:
    """One metric, written out at once (Powertools' single_metric), not into the shared metric set:
    the publisher flushes nothing of what other code added (in the local stack every function shares
    one process, and one set)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    from vary_region.observability import metrics

    with single_metric(
        name=name, unit=MetricUnit.Count, value=value, default_dimensions={"service": str(metrics.service)}
    ):
        pass
