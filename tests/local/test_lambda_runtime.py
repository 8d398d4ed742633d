"""The local Lambda runtime runs several functions' handlers in threads of one process, where
Lambda gives each its own process: each log line must still name the function, and the job, of
the invocation that logged it."""

from __future__ import annotations

import io
import json
import threading
from types import ModuleType
from typing import Any

import pytest
from vary_region_local import lambda_runtime
from vary_region_local.lambda_runtime import LocalFunction


def _handler_module(logic: Any) -> ModuleType:
    """A function's handler module, decorated as the project's handlers are."""
    from vary_region.observability import logger

    module = ModuleType("handler")
    module.lambda_handler = logger.inject_lambda_context(clear_state=True)(logic)  # type: ignore[attr-defined]
    return module


@pytest.fixture()
def log_lines() -> Any:
    from vary_region.observability import logger

    handler = logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


def test_each_line_names_the_function_and_job_that_logged_it_while_another_runs(
    monkeypatch: pytest.MonkeyPatch, log_lines: Any
) -> None:
    from vary_region.observability import logger

    completion_started, publisher_done = threading.Event(), threading.Event()

    def completion(event: dict[str, Any], context: Any) -> None:
        logger.append_keys(job_id="job-of-the-completion")
        completion_started.set()
        assert publisher_done.wait(10)  # the publisher's whole invocation runs meanwhile
        logger.info("result copied")

    def publisher(event: dict[str, Any], context: Any) -> None:
        logger.info("event published")

    modules = iter([_handler_module(completion), _handler_module(publisher)])
    monkeypatch.setattr(lambda_runtime, "load_handler_module", lambda folder: next(modules))
    completion_function = LocalFunction("vary-region-completion", "completion", 10)
    publisher_function = LocalFunction("vary-region-publisher", "publisher", 10)

    worker = threading.Thread(target=completion_function.invoke, args=({},))
    worker.start()
    assert completion_started.wait(10)
    publisher_function.invoke({})
    publisher_done.set()
    worker.join(10)

    lines = {line["message"]: line for line in log_lines()}
    assert lines["result copied"]["function_name"] == "vary-region-completion"
    assert lines["result copied"]["job_id"] == "job-of-the-completion"
    assert lines["event published"]["function_name"] == "vary-region-publisher"
    assert "job_id" not in lines["event published"]
