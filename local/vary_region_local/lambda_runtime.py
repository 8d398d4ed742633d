"""Just enough of the Lambda runtime to run the project's real handlers in-process: load a
handler module from its folder (as the runtime does, after the environment is set) and give
it a context object."""

from __future__ import annotations

import importlib.util
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

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
    """One deployed function: its handler module, loaded once (a warm container), invoked serially
    per worker like a Lambda execution environment."""

    def __init__(self, name: str, folder: str, timeout_seconds: float) -> None:
        self.name = name
        self.timeout_seconds = timeout_seconds
        self._module = load_handler_module(folder)
        self._lock = threading.Lock()

    @property
    def module(self) -> ModuleType:
        return self._module

    def invoke(self, event: dict[str, Any]) -> Any:
        # Powertools keeps per-invocation state (logger keys, metrics) in module singletons,
        # so invocations of one function are serialised, as in a single Lambda container.
        with self._lock:
            return self._module.lambda_handler(event, LambdaContext(self.name, self.timeout_seconds))


def load_handler_module(folder: str) -> ModuleType:
    path = REPO_ROOT / "functions" / folder / "app.py"
    spec = importlib.util.spec_from_file_location(f"vary_region_function_{folder}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
