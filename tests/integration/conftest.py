"""Fixtures the integration tests share (the stack, sim, s3 and table ones live in tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import ProviderRecorder


@pytest.fixture()
def provider(sim: Any, monkeypatch: Any) -> ProviderRecorder:
    """What reaches the provider (and its image host) during the test, per task: other jobs may be
    active meanwhile, so tests count their own task's calls."""
    return ProviderRecorder.install(sim, monkeypatch)
