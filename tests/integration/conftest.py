"""Fixtures the integration tests share (the stack, sim, s3 and table ones live in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.support.recorders import ProviderRecorder


@pytest.fixture()
def provider(sim: Any, monkeypatch: Any) -> ProviderRecorder:
    """What reaches the provider (and its image host) during the test, per task: other jobs may be
    active meanwhile, so tests count their own task's calls."""
    return ProviderRecorder.install(sim, monkeypatch)


@pytest.fixture(scope="module")
def own_table(stack: Any, request: Any) -> Iterator[Any]:
    """A job table of the test module's own (the stack's table definition): store-level tests read
    every item and the slot counter without other tests' jobs in the way."""
    from vary_region_local.stack import table_definition

    name = f"{request.module.__name__.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}".replace("_", "-")
    table = boto3.resource("dynamodb").create_table(**table_definition(name))
    table.wait_until_exists()
    yield table
    table.delete()


@pytest.fixture()
def store(own_table: Any) -> Any:
    """A JobTable over own_table, with room for every claim a test makes."""
    from vary_region.store.job_table import JobTable

    return JobTable(own_table, max_active_tasks=1000)
