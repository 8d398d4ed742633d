"""Fixtures: one in-process local stack (moto server + APIFRAME simulator + the real handlers) per
test session; tests talk to it over HTTP through boto3, as the functions do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

# As in a deployed function, Powertools reads these when the shared Logger/Metrics are created,
# which here is the first import of vary_region by any test module, before the stack starts.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "vary-region")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "VaryRegion")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("VARY_REGION_TEST_API_VERSION", "v1") != "v2":
        return
    v1_only = pytest.mark.skip(reason="about APIFRAME v1's own forms; the suite runs against v2")
    ran_already = pytest.mark.skip(reason="starts a stack of a fixed generation in either pass: the v1 pass ran it")
    for item in items:
        if item.get_closest_marker("v1_only"):
            item.add_marker(v1_only)
        elif item.get_closest_marker("fixed_generation"):
            item.add_marker(ran_already)


@pytest.fixture(scope="session")
def stack() -> Iterator[Any]:
    from vary_region_local.stack import LocalStack, StackOptions

    # VARY_REGION_TEST_API_VERSION=v2 runs the suite against APIFRAME v2 (the simulator speaks it too).
    api_version = os.environ.get("VARY_REGION_TEST_API_VERSION", "v1")
    options = StackOptions(
        api_version=api_version,
        state_dir=None,
        simulator_step_delay=0.02,
        reconcile_period_seconds=0,  # tests run the reconciler explicitly
        reconcile_quiet_seconds=1,
        submit_retry_budget_seconds=3.0,
        max_image_bytes=2 * 1024 * 1024,
        # Short enough that timeout tests run in seconds, long enough for a loaded CI machine.
        extra_env={"APIFRAME_READ_TIMEOUT_SECONDS": "2", "IMAGE_TIMEOUT_SECONDS": "3"}
        # The budget tests' arithmetic is in v1's prices; v2's own are proved end to end (tests/e2e).
        | ({"CREDITS_IMAGINE": "4", "CREDITS_UPSCALE": "2", "CREDITS_INPAINT": "4"} if api_version == "v2" else {}),
        # In this process, so tests can make its stream poller fail; `make local` and the e2e tests
        # run it in a process of its own.
        publisher_process=False,
    )
    with LocalStack(options) as running:
        yield running


@pytest.fixture()
def sim(stack: Any) -> Iterator[Any]:
    """The simulator with its faults cleared before and after each test."""
    assert stack.simulator.wait_idle(timeout=10)
    stack.simulator.reset()
    yield stack.simulator
    stack.simulator.reset()
    stack.simulator.wait_idle(timeout=10)


@pytest.fixture()
def s3(stack: Any) -> Any:
    return boto3.client("s3")


@pytest.fixture()
def table(stack: Any) -> Any:
    return boto3.resource("dynamodb").Table(stack.info.table)


@pytest.fixture()
def bucket(stack: Any) -> str:
    return stack.info.bucket
