"""Just enough of the Lambda runtime to run the project's real handlers in-process: load a
handler module from its folder (as the runtime does, after the environment is set) and give
it a context object."""

from __future__ import annotations

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


class LocalFunction:
    """One deployed function: `containers` warm execution environments, each its own copy of the
    handler module, each running one invocation at a time, as Lambda does.

    Unlike Lambda, the copies share one process, and with it Powertools' process-wide state: the
    layer's Logger keys and Metrics buffer. Several containers are only safe for handlers that use
    none of it concurrently; the stack runs one each.
    """

    def __init__(
        self, name: str, folder: str, timeout_seconds: float, containers: int = 1, memory_mb: int = 256
    ) -> None:
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
            return module.lambda_handler(event, LambdaContext(self.name, self.timeout_seconds, self.memory_mb))
        finally:
            self._idle.put(module)


def load_handler_module(folder: str) -> ModuleType:
    path = REPO_ROOT / "functions" / folder / "app.py"
    spec = importlib.util.spec_from_file_location(f"vary_region_function_{folder}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
