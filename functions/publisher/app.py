"""Publisher function: the job table's stream -> one state-change event per job transition, on the bus."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from vary_region import wiring
from vary_region.observability import logger, tracer
from vary_region.settings import get_settings

settings = get_settings()
publisher = wiring.state_change_publisher(settings)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
# No @metrics.log_metrics: its counts are single metrics (events/publisher.py), written as they happen.
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Failed records are reported by sequence number: the stream gives them (and those after them)
    # back, and bisection isolates a record that keeps failing until the on-failure destination.
    return publisher.handle_stream_batch(event.get("Records") or [])
