"""Webhook function: APIFRAME progress and final webhooks (HTTP API) -> job state and result images."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from vary_region import wiring
from vary_region.completion import UpdateOutcome
from vary_region.invocation import invocation_deadline
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.settings import get_settings
from vary_region.webhook import WebhookDelivery, WebhookMalformed, WebhookUnauthorized

settings = get_settings()
receiver = wiring.webhook_receiver(settings)
app = APIGatewayHttpResolver()

# Not done yet, but the provider (if it retries) or the reconciler will bring the job home.
_TRY_AGAIN = (UpdateOutcome.COPY_RETRY, UpdateOutcome.BUSY)
# Time kept back to record the outcome and answer before Lambda (and API Gateway, at 30 s) gives up.
_RESPONSE_MARGIN_SECONDS = 4.0


@app.post("/webhook/<job_id>")
@tracer.capture_method(capture_response=False)
def receive_webhook(job_id: str) -> Response:
    event = app.current_event
    logger.append_keys(job_id=unquote(job_id))
    # Raw bytes: a body that is not UTF-8 must still reach the secret check (and then get a 400).
    body = base64.b64decode(event.body or "") if event.is_base64_encoded else (event.body or "").encode("utf-8")
    delivery = WebhookDelivery(job_id=unquote(job_id), headers=event.headers, body=body)
    result = receiver.receive(delivery, deadline=invocation_deadline(app.lambda_context, _RESPONSE_MARGIN_SECONDS))
    status = 503 if result.outcome in _TRY_AGAIN else 200
    return Response(status, content_types.APPLICATION_JSON, {"outcome": str(result.outcome), "detail": result.detail})


@app.exception_handler(WebhookUnauthorized)
def unauthorized(error: WebhookUnauthorized) -> Response:
    metrics.add_metric(name="WebhooksRejected", unit=MetricUnit.Count, value=1)
    # The reason stays in our logs; the caller learns nothing beyond 401.
    logger.warning("webhook rejected", extra={"reason": str(error)})
    return Response(401, content_types.APPLICATION_JSON, {"message": "unauthorized"})


@app.exception_handler(WebhookMalformed)
def malformed(error: WebhookMalformed) -> Response:
    # Authenticated, so not an attack: counted apart from WebhooksRejected (which the alarm watches).
    metrics.add_metric(name="WebhooksMalformed", unit=MetricUnit.Count, value=1)
    logger.warning("webhook rejected: malformed body", extra={"reason": str(error)})
    return Response(400, content_types.APPLICATION_JSON, {"message": str(error)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
