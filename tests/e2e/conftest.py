"""The local stack as a user starts it: `python -m vary_region_local.stack` in a process of its own,
with ephemeral ports and a temporary state dir. Tests reach it only through stack.json, S3/DynamoDB
over HTTP (boto3, the CLI) and the simulator's HTTP port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from vary_region_local import process
from vary_region_local.stack import PARAMETER_VARIABLES

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
# VARY_REGION_TEST_API_VERSION=v2: the user is one with a v2 key, who starts `make local` with
# APIFRAME_API_VERSION=v2 (its simulator then speaks v2 too).
API_VERSION = os.environ.get("VARY_REGION_TEST_API_VERSION", "v1")
# The environment pytest was started with. The integration suite's stack, which runs in pytest's own
# process, later sets its functions' variables (MAX_ACTIVE_TASKS, CREDITS_*, ...) in os.environ, and
# `make local` honours some of those: a user's stack must never inherit them.
_STARTED_WITH = dict(os.environ)


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user with no AWS or vary-region settings (and no ~/.aws), but the
    generation the suite runs against; none of the stack parameters `make local` honours either."""
    env = {
        k: v
        for k, v in _STARTED_WITH.items()
        if not k.startswith(("AWS_", "VARY_REGION_", "APIFRAME_")) and k not in PARAMETER_VARIABLES
    }
    env["AWS_CONFIG_FILE"] = str(home / "aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "aws-credentials")
    env["PYTHONUNBUFFERED"] = "1"
    if API_VERSION != "v1":
        env["APIFRAME_API_VERSION"] = API_VERSION
    return env


class StackProcess(process.StackProcess):
    """The shared StackProcess, failing the test (with the stack's log) when it cannot start."""

    def start(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        try:
            return super().start(timeout)
        except process.StackProcessError as exc:
            pytest.fail(f"{exc}:\n{self.log_tail()}")


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
    sqs: Any


@pytest.fixture(scope="session")
def aws(local_stack: StackProcess) -> Aws:
    info = local_stack.info
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"])
    return Aws(
        s3=session.client("s3", endpoint_url=info["aws_endpoint_url"]),
        table=session.resource("dynamodb", endpoint_url=info["aws_endpoint_url"]).Table(info["table"]),
        bucket=info["bucket"],
        sqs=session.client("sqs", endpoint_url=info["aws_endpoint_url"]),
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
