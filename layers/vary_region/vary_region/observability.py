"""The Logger, Tracer and Metrics every function shares (service name and namespace come from
POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger()
tracer = Tracer()
metrics = Metrics()

__all__ = ["MetricUnit", "logger", "metrics", "tracer"]
