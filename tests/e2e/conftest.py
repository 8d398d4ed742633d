"""The local stack as a user starts it: `python -m vary_region_local.stack` in a process of its own,
with ephemeral ports and a temporary state dir. Tests reach it only through stack.json, S3/DynamoDB
over HTTP (boto3, the CLI) and the simulator's HTTP port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user with no AWS or vary-region settings (and no ~/.aws)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VARY_REGION_", "APIFRAME_"))}
    env["AWS_CONFIG_FILE"] = str(home / "aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "aws-credentials")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _default_sigint() -> None:
    # pytest may run with SIGINT ignored (started in the background); the stack must see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class StackProcess:
    state_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "stack.log"

    def start(self) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "vary_region_local.stack",
            "--aws-port",
            "0",
            "--webhook-port",
            "0",
            "--simulator-port",
            "0",
            "--state-dir",
            str(self.state_dir),
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO_ROOT,
                preexec_fn=_default_sigint,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the stack exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self.info = json.loads(self.stack_file.read_text())
                return self.info
            except (OSError, ValueError):  # not written yet, or half written
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"no {self.stack_file} after {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """What Ctrl-C does; kill only if that does not work (and then fail loudly via the exit code)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    home = tmp_path_factory.mktemp("home")
    stack = StackProcess(tmp_path_factory.mktemp("state"), user_env(home))
    stack.start()
    yield stack
    stack.stop()


@dataclass
class Aws:
    """What `aws s3 cp` and `aws dynamodb get-item` would talk to."""

    s3: Any
    table: Any
    bucket: str


@pytest.fixture(scope="session")
def aws(local_stack: StackProcess) -> Aws:
    info = local_stack.info
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"])
    return Aws(
        s3=session.client("s3", endpoint_url=info["aws_endpoint_url"]),
        table=session.resource("dynamodb", endpoint_url=info["aws_endpoint_url"]).Table(info["table"]),
        bucket=info["bucket"],
    )


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture()
def run_cli(local_stack: StackProcess, tmp_path: Path) -> CliRunner:
    """Run `vary-region` in a subprocess: `python -m vary_region_cli.main` or (script=True) the
    installed console script. local=True points it at the test stack with --stack-file."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)

    def run(
        *args: str,
        local: bool = True,
        script: bool = False,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        program = (
            [str(Path(sys.executable).with_name("vary-region"))]
            if script
            else [sys.executable, "-m", "vary_region_cli.main"]
        )
        options = ["--stack-file", str(local_stack.stack_file)] if local else []
        return subprocess.run(
            [*program, *options, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or tmp_path,
            env=user_env(home) | (env or {}),
            check=False,
        )

    return run
