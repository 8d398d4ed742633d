"""Starting `vary-region-local` when it cannot start: a port already taken (a second `make local`)
or a failure half-way through start(). Either way the process must end promptly with a non-zero
code and say what to do, instead of waiting for ever for a server that never came up."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, user_env

pytestmark = [pytest.mark.e2e, pytest.mark.generation_blind]

PROMPTLY = 20.0  # seconds: generous for a loaded 2-core machine; the hang it guards against is for ever


@pytest.fixture()
def taken_port() -> Iterator[int]:
    """A port with a listener on it, as a running stack (or any other server) holds it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def run_stack(
    tmp_path: Path, *args: str, program: list[str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        [
            *(program or [sys.executable, "-m", "vary_region_local.stack"]),
            "--state-dir",
            str(tmp_path / "state"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=PROMPTLY + 10,  # a hang fails the test here rather than blocking the suite
        cwd=REPO_ROOT,
        env=user_env(home),
        check=False,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("option", "env", "others"),
    [
        ("--aws-port", "LOCAL_AWS_PORT", ["--webhook-port", "0", "--simulator-port", "0"]),
        ("--webhook-port", "LOCAL_WEBHOOK_PORT", ["--aws-port", "0", "--simulator-port", "0"]),
        ("--simulator-port", "LOCAL_SIMULATOR_PORT", ["--aws-port", "0", "--webhook-port", "0"]),
    ],
    ids=["aws", "webhook", "simulator"],
)
def test_a_taken_port_ends_the_stack_at_once_and_says_how_to_choose_another(
    tmp_path: Path, taken_port: int, option: str, env: str, others: list[str]
) -> None:
    result, elapsed = run_stack(tmp_path, option, str(taken_port), *others)
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < PROMPTLY
    assert f"port {taken_port} on 127.0.0.1" in result.stderr and "is in use" in result.stderr
    assert f"{env}=0 make local" in result.stderr and f"vary-region-local {option} 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ready" not in result.stdout
    assert not (tmp_path / "state" / "stack.json").exists()


def test_a_second_stack_on_the_same_state_dir_leaves_the_first_ones_stack_file_alone(
    tmp_path: Path, taken_port: int
) -> None:
    (tmp_path / "state").mkdir()
    first = json.dumps({"aws_endpoint_url": f"http://127.0.0.1:{taken_port}"})
    (tmp_path / "state" / "stack.json").write_text(first)
    result, _ = run_stack(tmp_path, "--aws-port", str(taken_port), "--webhook-port", "0", "--simulator-port", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stack.json exists" in result.stderr and "--state-dir" in result.stderr
    assert (tmp_path / "state" / "stack.json").read_text() == first  # the CLI still finds the first stack


def test_the_same_port_for_two_servers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = str(probe.getsockname()[1])  # free once the probe closes, so only the clash is wrong
    result, elapsed = run_stack(tmp_path, "--aws-port", port, "--webhook-port", port, "--simulator-port", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < PROMPTLY
    assert f"port {port} is given to both --aws-port and --webhook-port" in result.stderr
    assert "LOCAL_WEBHOOK_PORT=0" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LOCAL_AWS_PORT", "70000", "'70000' is not a port number"),
        ("MAX_ACTIVE_TASKS", "abc", "MAX_ACTIVE_TASKS='abc' is not a number"),
        ("MAX_ACTIVE_TASKS", "0", "MAX_ACTIVE_TASKS must be a positive number"),
        ("OVER_BUDGET", "later", "OVER_BUDGET='later' must be one of hold, reject"),
    ],
)
def test_a_bad_setting_in_the_environment_is_a_usage_error(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "vary_region_local.stack", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
        cwd=REPO_ROOT,
        env=user_env(home) | {variable: value},
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "stack.json").exists()


# A stack whose start() fails after moto server and the simulator are up (the resources step raises),
# or after the webhook server exists but before it serves (the functions step raises).
FAILING_START = """
import sys
from vary_region_local import stack

def fail(self, *args, **kwargs):
    raise RuntimeError("simulated failure while starting")

setattr(stack.LocalStack, sys.argv[1], fail)
sys.exit(stack.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("step", ["_create_resources", "_load_functions"])
def test_a_failure_during_start_stops_what_started_and_exits(tmp_path: Path, step: str) -> None:
    (tmp_path / "state").mkdir()
    other = json.dumps({"aws_endpoint_url": "http://127.0.0.1:9"})
    (tmp_path / "state" / "stack.json").write_text(other)  # another stack's: start() writes ours last
    result, elapsed = run_stack(
        tmp_path,
        "--aws-port", "0", "--webhook-port", "0", "--simulator-port", "0",
        program=[sys.executable, "-c", FAILING_START, step],
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < PROMPTLY
    assert "the local stack could not start: RuntimeError: simulated failure while starting" in result.stderr
    assert (tmp_path / "state" / "stack.json").read_text() == other


STUCK_START = """
import sys, time
from vary_region_local import stack

def stuck(self, *args, **kwargs):
    print("stuck in start()", flush=True)
    time.sleep(3600)  # as moto server waits when its port was taken after the check

stack.LocalStack._create_resources = stuck
sys.exit(stack.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_stack_that_is_stuck_starting(tmp_path: Path, signum: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    command = [sys.executable, "-c", STUCK_START, "--state-dir", str(tmp_path / "state")]
    ports = ["--aws-port", "0", "--webhook-port", "0", "--simulator-port", "0"]
    with subprocess.Popen(
        [*command, *ports], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=user_env(home)
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "stuck in start()"
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=PROMPTLY)
        finally:
            process.kill()
    assert process.returncode == 130, stdout + stderr
    assert "stopped while starting" in stderr
