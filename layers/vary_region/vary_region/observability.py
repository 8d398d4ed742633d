"""The Logger, Tracer and Metrics every function shares (service name and namespace come from
POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE)."""

from __future__ import annotations

import logging

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

# The AWS SDK logs request and response bodies at DEBUG, and those carry the API key (Secrets
# Manager) and webhook secret hashes (DynamoDB). A DEBUG level for the application must not
# switch that on, so the SDK's loggers never go below INFO.
for _sdk_logger in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_sdk_logger).setLevel(logging.INFO)

logger = Logger()
tracer = Tracer()
metrics = Metrics()

__all__ = ["MetricUnit", "logger", "metrics", "tracer"]
