"""The local stack in a process of its own, started and stopped as a user would: used by
`make demo` and by the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_START_TIMEOUT = 30.0
STACK_STOP_TIMEOUT = 15.0


class StackProcessError(Exception):
    """The stack exited or did not become ready."""


class StackProcess:
    """`python -m vary_region_local.stack` with ephemeral ports, its log in <state_dir>/stack.log."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None, *, own_session: bool = False) -> None:
        self.state_dir = state_dir
        self.stack_file = state_dir / "stack.json"
        self.log_path = state_dir / "stack.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        # Never the caller's AWS or APIFRAME settings unless given: the stack must not reach real services.
        self._env = env if env is not None else clean_environment()
        self._own_session = own_session

    def start(self, timeout: float = STACK_START_TIMEOUT) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stack_file.unlink(missing_ok=True)  # stale: its stack is gone
        command = [
            sys.executable, "-m", "vary_region_local.stack",
            "--aws-port", "0", "--webhook-port", "0", "--simulator-port", "0",
            "--state-dir", str(self.state_dir),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env | {"PYTHONUNBUFFERED": "1"},  # a live log
                cwd=REPO_ROOT,
                start_new_session=self._own_session,  # Ctrl-C then reaches the caller only, which stops the stack
                preexec_fn=_default_sigint,  # no threads yet
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackProcessError(f"the local stack exited with code {self.process.returncode} while starting")
            info = read_stack_file(self.stack_file)
            if info is not None:
                self.info = info
                return info
            time.sleep(0.1)
        self.stop()
        raise StackProcessError(f"the local stack did not write {self.stack_file} within {timeout:.0f}s")

    def stop(self, timeout: float = STACK_STOP_TIMEOUT) -> int | None:
        """SIGINT (Ctrl-C) first; kill only if it does not stop in time. Returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                self.stack_file.unlink(missing_ok=True)  # a killed stack cannot clean up after itself
        return process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def requested_api_version() -> str:
    """The APIFRAME generation the environment asks for (APIFRAME_API_VERSION), as the stack reads it."""
    return os.environ.get("APIFRAME_API_VERSION", "").strip().lower() or "v1"


def clean_environment() -> dict[str, str]:
    """The caller's environment without what could reach real services. The API generation stays:
    `APIFRAME_API_VERSION=v2 make demo` runs the demo against the simulator speaking v2."""
    kept = {"APIFRAME_API_VERSION"}
    return {k: v for k, v in os.environ.items() if k in kept or not k.startswith(("APIFRAME_", "AWS_", "LOCAL_"))}


def _default_sigint() -> None:
    # A stack started from a script in the background inherits an ignored SIGINT; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_stack_file(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not there yet, or half written
    return info if isinstance(info, dict) and info.get("aws_endpoint_url") else None
