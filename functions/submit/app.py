"""Submit function: S3 upload notifications (through SQS), held jobs' wake-ups, and jobs requested by an
event (a `Vary Region Job Requested` event through the bus's rule, or the same body sent to the queue)
-> the job's one paid APIFRAME submission."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from vary_region import wiring
from vary_region.core.strict_json import JsonRefused
from vary_region.lambda_events import (
    QueueMessage,
    is_sqs_batch,
    partial_batch_response,
    process_queue_batch,
    queue_messages,
)
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.settings import get_settings
from vary_region.submit.requested import JobRequestInvalid, requested_job
from vary_region.submit.s3_notifications import uploaded_keys
from vary_region.submit.submitter import SubmitOutcome, SubmitResult

settings = get_settings()
submitter = wiring.job_submitter(settings)

_OUTCOME_METRICS = {
    SubmitOutcome.SUBMITTED: "JobsSubmitted",
    SubmitOutcome.REJECTED: "JobsRejected",
    SubmitOutcome.FAILED: "JobsFailed",
    SubmitOutcome.AMBIGUOUS: "SubmissionsAmbiguous",
}


def handle_upload(key: str, lambda_context: LambdaContext) -> None:
    logger.remove_keys(["job_id", "task_id"])  # one batch carries many jobs: no key leaks to the next
    # Lambda stopping the invocation mid-call would leave a paid task nobody knows about: the
    # submitter defers an upload, untouched, when too little time is left right before its claim.
    result = submitter.handle_upload(key, lambda: lambda_context.get_remaining_time_in_millis() / 1000)
    logger.info("upload handled", extra={"outcome": str(result.outcome), "job_id": result.job_id})
    _count(result)


def _count(result: SubmitResult) -> None:
    if result.first_seen:
        metrics.add_metric(name="JobsReceived", unit=MetricUnit.Count, value=1)
    if result.outcome in _OUTCOME_METRICS:
        metrics.add_metric(name=_OUTCOME_METRICS[result.outcome], unit=MetricUnit.Count, value=1)


@tracer.capture_method(capture_response=False)
def record_handler(message: QueueMessage, lambda_context: LambdaContext) -> None:
    try:
        try:
            body = message.json_body()
        except JsonRefused as refused:
            # No redelivery makes it JSON: never retried. A job request readable enough to name its job
            # (only its numbers refused) is REJECTED, as its file would be; any other is refused below.
            unreadable = requested_job(refused.parsed)
            if unreadable is None:
                raise JobRequestInvalid(f"the message is not valid JSON ({refused.reason})") from None
            _count(submitter.refuse_request(unreadable, refused.reason))
            return
        requested = requested_job(body)
        if requested is not None:
            # Its file goes into the inbox; that upload's own notification starts the job, once.
            submitter.accept_request(requested)
            return
    except JobRequestInvalid as exc:
        # Nothing names a job: there is no item or error.json to write, and no redelivery can help.
        logger.error("job request refused", extra={"reason": str(exc), "message_id": message.message_id})
        metrics.add_metric(name="JobRequestsRefused", unit=MetricUnit.Count, value=1)
        return
    for key in uploaded_keys(body):
        handle_upload(key, lambda_context)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not is_sqs_batch(event):  # a direct S3 notification, e.g. `sam local invoke -e events/s3-put-mask.json`
        for key in uploaded_keys(event):
            handle_upload(key, context)
        return partial_batch_response([])

    def handle(message: QueueMessage) -> None:
        logger.remove_keys(["job_id", "task_id"])  # a failure before handle_upload must not name the last job
        record_handler(message, context)

    def failed(message: QueueMessage) -> None:
        logger.exception("queue message failed", extra={"message_id": message.message_id})

    return process_queue_batch(queue_messages(event), handle, failed)
