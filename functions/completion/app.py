"""Completion function: requests on the completion queue -> confirm through Fetch, copy, complete."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from vary_region import wiring
from vary_region.aws.completion_queue import CompletionRequest
from vary_region.invocation import invocation_deadline
from vary_region.lambda_events import QueueMessage, process_queue_batch, queue_messages
from vary_region.observability import logger, metrics, tracer
from vary_region.settings import get_settings

settings = get_settings()
completer = wiring.job_completer(settings)
# Time kept back to record a copy failure and answer before Lambda stops the invocation.
_MARGIN_SECONDS = 5.0


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deadline = invocation_deadline(context, _MARGIN_SECONDS)

    def handle(message: QueueMessage) -> None:
        logger.remove_keys(["job_id", "task_id"])  # one batch may carry several jobs
        request = CompletionRequest.from_message(message.json_body())
        if request is None:
            logger.warning("not a completion request; dropped", extra={"message_id": message.message_id})
            return
        result = completer.handle(request, deadline=deadline)
        logger.info("completion request handled", extra={"outcome": str(result.outcome)})

    def failed(message: QueueMessage) -> None:
        logger.exception("completion request failed", extra={"message_id": message.message_id})

    return process_queue_batch(queue_messages(event), handle, failed)
