"""Just enough of the Lambda runtime to run the project's real handlers in-process: load a
handler module from its folder (as the runtime does, after the environment is set) and give
it a context object."""

from __future__ import annotations

import contextvars
import importlib.util
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vary_region_local.template import Function

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from vary_region_local.console import whole_lines_stdout

REPO_ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    function_name: str
    timeout_seconds: float = 30.0
    memory_limit_in_mb: int = 256
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


# The keys the layer's Logger puts on every line (function_name, request id, job_id, ...) of the
# invocation running in this context; unset outside an invocation.
_invocation_log_keys: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("invocation_log_keys")


class _KeysOfTheInvocation:
    """The Powertools formatter's `log_format`, one dict per invocation instead of one per process.

    Deployed, one process runs one invocation at a time, so the handlers set these keys freely
    (inject_lambda_context, append_keys). Here several functions' handlers run in threads of one
    process: with one dict, a publisher invocation's clear_state renamed the completion's lines.
    """

    def __get__(self, formatter: Any, owner: type | None = None) -> Any:
        if formatter is None:
            return self
        # Outside an invocation (the stack's own code, a thread a handler started): the process's keys.
        return _invocation_log_keys.get(formatter.__dict__["log_format"])

    def __set__(self, formatter: Any, keys: dict[str, Any]) -> None:
        if _invocation_log_keys.get(None) is None:
            formatter.__dict__["log_format"] = keys
        else:
            _invocation_log_keys.set(keys)


class _FormatterPerInvocation(LambdaPowertoolsFormatter):
    log_format = _KeysOfTheInvocation()


def _keys_per_invocation() -> None:
    """Give the layer's shared Logger one set of keys per invocation (see _KeysOfTheInvocation)."""
    from vary_region.observability import logger

    formatter = logger.registered_formatter
    if type(formatter) is LambdaPowertoolsFormatter:
        formatter.__class__ = _FormatterPerInvocation  # keeps its options and the keys it holds


class LocalFunction:
    """One deployed function: `containers` warm execution environments, each its own copy of the
    handler module, each running one invocation at a time, as Lambda does.

    Unlike Lambda, the copies share one process, and with it Powertools' process-wide state. Each
    invocation runs in a context of its own, where the layer's Logger keeps its own keys, so each
    line names the function (and job) that logged it. The Metrics buffer stays shared: several
    containers are only safe for handlers that do not flush metrics concurrently; the stack runs one each.
    """

    def __init__(
        self, name: str, folder: str, timeout_seconds: float, containers: int = 1, memory_mb: int = 256
    ) -> None:
        _keys_per_invocation()
        self.name = name
        self.timeout_seconds = timeout_seconds
        self.memory_mb = memory_mb
        self.modules = [load_handler_module(folder) for _ in range(containers)]
        self._idle: queue.SimpleQueue[ModuleType] = queue.SimpleQueue()
        for module in self.modules:
            self._idle.put(module)

    @classmethod
    def of(cls, deployed: Function, containers: int = 1) -> LocalFunction:
        """The function as template.yaml deploys it: its name, folder, Timeout and MemorySize."""
        return cls(
            f"vary-region-{deployed.folder}",
            deployed.folder,
            deployed.timeout_seconds,
            containers=containers,
            memory_mb=deployed.memory_mb,
        )

    @property
    def module(self) -> ModuleType:
        """The first container's module (tests reach into it)."""
        return self.modules[0]

    def invoke(self, event: dict[str, Any]) -> Any:
        module = self._idle.get()  # waits, like a throttled invocation, when every container is busy
        try:
            return contextvars.copy_context().run(self._run, module, event)
        finally:
            self._idle.put(module)

    def _run(self, module: ModuleType, event: dict[str, Any]) -> Any:
        """In the invocation's own context: its Logger keys start as the process's, then are its own."""
        from vary_region.observability import logger

        _invocation_log_keys.set(dict(logger.get_current_keys()))
        stdout = whole_lines_stdout()
        try:
            return module.lambda_handler(event, LambdaContext(self.name, self.timeout_seconds, self.memory_mb))
        finally:
            stdout.end_of_invocation()


def load_handler_module(folder: str) -> ModuleType:
    path = REPO_ROOT / "functions" / folder / "app.py"
    spec = importlib.util.spec_from_file_location(f"vary_region_function_{folder}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
