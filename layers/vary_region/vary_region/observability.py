"""The Logger, Tracer and Metrics every function shares (service name and namespace come from
POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE)."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:
    import requests

# The AWS SDK logs request and response bodies at DEBUG, and those carry the API key (Secrets
# Manager) and webhook secret hashes (DynamoDB). A DEBUG level for the application must not
# switch that on, so the SDK's loggers never go below INFO.
for _sdk_logger in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_sdk_logger).setLevel(logging.INFO)

logger = Logger()
# X-Ray's patch_all would import every library it can trace (requests, sqlite3, ...) during the
# cold start. botocore is imported anyway; requests is traced when a function first uses it.
tracer = Tracer(patch_modules=("botocore",))
metrics = Metrics()


@functools.cache
def _trace_requests() -> None:
    tracer.patch(("requests",))


def traced_http_session() -> requests.Session:
    """A requests session whose calls show in X-Ray (requests is imported here, on first use)."""
    import requests

    _trace_requests()
    return requests.Session()


__all__ = ["MetricUnit", "logger", "metrics", "traced_http_session", "tracer"]
