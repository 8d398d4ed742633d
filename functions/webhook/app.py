"""Webhook function: APIFRAME progress and final webhooks (HTTP API) -> job state, or a request to
the completion worker. It copies nothing, so it answers in milliseconds."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from vary_region import wiring
from vary_region.lambda_events import HttpRequest, http_response
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.settings import get_settings
from vary_region.webhook.receiver import WebhookDelivery, WebhookMalformed, WebhookUnauthorized

settings = get_settings()
receiver = wiring.webhook_receiver(settings)


@tracer.capture_method(capture_response=False)
def receive_webhook(path_job_id: str, request: HttpRequest) -> dict[str, Any]:
    delivery = WebhookDelivery(path_job_id=path_job_id, headers=request.headers, body=request.body)
    outcome = receiver.receive(delivery)
    return http_response(200, {"outcome": str(outcome)})


def answer(request: HttpRequest) -> dict[str, Any]:
    """The HTTP answer to one request; every refusal is decided here."""
    job_id = request.path_parameters.get("job_id")
    if request.method != "POST" or not job_id:  # the HTTP API routes only POST /webhook/{job_id} here
        return http_response(404, {"message": "not found"})
    try:
        return receive_webhook(job_id, request)
    except WebhookUnauthorized as error:
        metrics.add_metric(name="WebhooksRejected", unit=MetricUnit.Count, value=1)
        # The reason stays in our logs; the caller learns nothing beyond 401.
        logger.warning("webhook rejected", extra={"reason": str(error)})
        return http_response(401, {"message": "unauthorized"})
    except WebhookMalformed as error:
        # Authenticated, so not an attack: counted apart from WebhooksRejected (which the alarm watches).
        metrics.add_metric(name="WebhooksMalformed", unit=MetricUnit.Count, value=1)
        logger.warning("webhook rejected: malformed body", extra={"reason": str(error)})
        return http_response(400, {"message": str(error)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return answer(HttpRequest.from_http_api_event(event))
