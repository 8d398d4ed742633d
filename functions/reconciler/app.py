"""Reconciler function: on a schedule, finish jobs whose webhooks never arrived (through Fetch)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from vary_region import wiring
from vary_region.invocation import invocation_deadline
from vary_region.observability import logger, metrics, tracer
from vary_region.settings import get_settings

settings = get_settings()
reconciler = wiring.reconciler(settings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return reconciler.run(deadline=invocation_deadline(context, margin_seconds=10.0)).to_dict()
