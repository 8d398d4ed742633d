"""Fixtures: one in-process local stack (moto server + APIFRAME simulator + the real handlers) per
test session, that is per pytest-xdist worker; tests talk to it over HTTP through boto3, as the
functions do."""

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


# Under pytest-xdist (`make test` runs it) every worker is a session of its own, with a `stack` of
# its own, so tests spread freely over the workers. Two kinds of shared fixture are not per worker
# but per group of tests, and keep their tests on one worker (`--dist loadgroup`, pyproject.toml):
# - a module-scoped fixture (a stack process of the module's own, a table, jobs in flight) is set up
#   once per module, as in a serial run, instead of once on every worker the module's tests reach;
# - SHARED_IN_ORDER: a session fixture that its tests share in collection order, because one of them
#   ends it (tests/e2e: the user's stack, which test_stack_stops_cleanly_on_sigint stops, last).
SHARED_IN_ORDER = ("local_stack",)
# The tests that end a SHARED_IN_ORDER fixture: moved after every other test, so a later module that
# shares it (the mask editor's, the CLI's job options) never finds it stopped.
ENDS_SHARED = ("test_stack_stops_cleanly_on_sigint",)


def worker_group(item: pytest.Item) -> str | None:
    """The xdist group whose worker runs `item`, or None when any worker may."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixtures the test uses
    if info is None:
        return None
    for name in SHARED_IN_ORDER:
        if name in info.names_closure:
            return name
    if any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
        return item.nodeid.split("::", 1)[0]  # the module's path
    return None


# tryfirst: xdist's worker reads the groups in its own pytest_collection_modifyitems.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: getattr(item, "originalname", item.name) in ENDS_SHARED)  # stable: the rest keep order
    for item in items:
        group = worker_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("VARY_REGION_TEST_API_VERSION", "v1") != "v2":
        return
    v1_only = pytest.mark.skip(reason="about APIFRAME v1's own forms; the suite runs against v2")
    ran_already = pytest.mark.skip(reason="starts a stack of a fixed generation in either pass: the v1 pass ran it")
    blind = pytest.mark.skip(reason="generation-blind (no provider call on its path): the v1 pass ran it")
    for item in items:
        if item.get_closest_marker("v1_only"):
            item.add_marker(v1_only)
        elif item.get_closest_marker("fixed_generation"):
            item.add_marker(ran_already)
        elif item.get_closest_marker("generation_blind"):
            item.add_marker(blind)


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


# What a test marked generation_blind must not make the simulator do: its path would then reach
# the provider's port, whose forms differ by generation, and the v2 pass must run it.
PROVIDER_CALLS = ("tasks_created", "fetch_calls", "webhooks_sent")


@pytest.fixture()
def sim(stack: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The simulator with its faults cleared before and after each test."""
    assert stack.simulator.wait_idle(timeout=10)
    stack.simulator.reset()
    yield stack.simulator
    if request.node.get_closest_marker("generation_blind"):
        stats = stack.simulator.stats()
        called = {name: stats[name] for name in PROVIDER_CALLS if stats[name]}
        assert not called, f"marked generation_blind, but it called the provider ({called}): remove the mark"
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
