"""End to end, as a user sets a budget: `make local` started with DAILY_CREDIT_LIMIT and OVER_BUDGET in
its environment (a stack process of its own), jobs submitted with the CLI, and `vary-region usage`
telling what was spent, against which limit, and which jobs wait for credits."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from vary_region.settings import GENERATIONS

from tests.e2e.conftest import API_VERSION, REPO_ROOT, StackProcess, user_env

pytestmark = pytest.mark.e2e
INPAINT = GENERATIONS[API_VERSION][1][2]  # the generation's own price: 4 credits on v1, 16 on v2
DAILY_LIMIT = INPAINT * 3 // 2  # room for one inpaint, not two


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    home = tmp_path_factory.mktemp("home")
    env = user_env(home) | {"DAILY_CREDIT_LIMIT": str(DAILY_LIMIT), "OVER_BUDGET": "reject"}
    stack = StackProcess(tmp_path_factory.mktemp("state"), env)
    stack.start()
    yield stack
    stack.stop()


def _cli(stack: StackProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "vary_region_cli.main", "--stack-file", str(stack.stack_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=user_env(home),
        check=False,
    )


def _table(stack: StackProcess) -> Any:
    info = stack.info
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"])
    return session.resource("dynamodb", endpoint_url=info["aws_endpoint_url"]).Table(info["table"])


def _submit(stack: StackProcess, tmp_path: Path, parent: str) -> str:
    submitted = _cli(stack, tmp_path, "submit", "--parent-task-id", parent, "--rect", "0,0,64,64", "--size", "512,512")
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def test_the_local_stack_honours_the_budget_settings_and_usage_reports_them(
    budget_stack: StackProcess, tmp_path: Path
) -> None:
    first = _submit(budget_stack, tmp_path, "e2e-budget-1")
    watched = _cli(budget_stack, tmp_path, "watch", first, "--timeout", "30", "--interval", "0.1")
    assert watched.returncode == 0, watched.stdout + watched.stderr

    second = _submit(budget_stack, tmp_path, "e2e-budget-2")  # one more inpaint: over the day's limit
    refused = _cli(budget_stack, tmp_path, "watch", second, "--timeout", "30", "--interval", "0.1")

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "REJECTED: BUDGET_EXCEEDED" in refused.stdout
    usage = _cli(budget_stack, tmp_path, "usage", "--json")
    assert usage.returncode == 0, usage.stderr
    day, month = json.loads(usage.stdout)["periods"]
    left = DAILY_LIMIT - INPAINT
    assert (day["period"], day["reserved"], day["spent"], day["limit"], day["left"]) == (
        "day", INPAINT, INPAINT, DAILY_LIMIT, left
    )  # fmt: skip
    assert (month["reserved"], month["limit"]) == (INPAINT, None)
    table = _cli(budget_stack, tmp_path, "usage")
    assert table.returncode == 0 and "no jobs held for credits" in table.stdout, table.stdout
    assert table.stdout.splitlines()[0].split() == ["CREDITS", "RESERVED", "SPENT", "IN", "FLIGHT", "LIMIT", "LEFT"]


# --- a spent budget: held jobs say so, and `make demo` refuses to add one ----------------------------

CHAIN = sum(GENERATIONS[API_VERSION][1])  # imagine + upscale-1x + inpaint: the demo's chain
HELD_WORDS = "held: the daily or monthly credit limit has no room left for its chain (BUDGET_EXCEEDED)"


@pytest.fixture(scope="module")
def spent_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """`DAILY_CREDIT_LIMIT=N make local` (hold, the default) after one plain job: one credit short of a chain."""
    home = tmp_path_factory.mktemp("home")
    env = user_env(home) | {"DAILY_CREDIT_LIMIT": str(CHAIN + INPAINT - 1)}
    stack = StackProcess(tmp_path_factory.mktemp("state"), env)
    stack.start()
    work = tmp_path_factory.mktemp("work")
    job_id = _submit(stack, work, "e2e-spent-1")
    watched = _cli(stack, work, "watch", job_id, "--timeout", "30", "--interval", "0.1")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    yield stack
    stack.stop()


def _next_utc_days() -> set[str]:
    """The start of tomorrow (UTC), as the CLI shows it; either side of a midnight the test may straddle."""
    today = datetime.now(UTC).date()
    return {f"{today + timedelta(days=n):%Y-%m-%d}T00:00:00Z" for n in (1, 2)}


def test_a_job_held_for_the_budget_says_so_and_until_the_next_day(spent_stack: StackProcess, tmp_path: Path) -> None:
    tomorrow = _next_utc_days()
    submitted = _cli(
        spent_stack, tmp_path, "submit", "--imagine", "a quiet harbour", "--index", "1",
        "--rect", "0.1,0.1,0.3,0.3", "--units", "fraction",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    watched = _cli(spent_stack, tmp_path, "watch", job_id, "--timeout", "8", "--interval", "0.2")

    assert watched.returncode == 2, watched.stdout + watched.stderr  # held: it times out, it never ends
    held_line = next((line for line in watched.stdout.splitlines() if HELD_WORDS in line), "")
    assert "RECEIVED" in held_line, watched.stdout
    assert any(f"until {day}, when the next UTC day's budget opens" in held_line for day in tomorrow), held_line
    assert f"is still RECEIVED, {HELD_WORDS}; until" in watched.stdout
    status = _cli(spent_stack, tmp_path, "status", job_id)
    assert status.returncode == 0 and json.loads(status.stdout)["held_reason"] == "BUDGET_EXCEEDED"
    assert any(f"is RECEIVED: {HELD_WORDS}; until {day}" in status.stderr for day in tomorrow), status.stderr


def test_make_demo_refuses_a_running_stack_whose_budget_is_spent(spent_stack: StackProcess, tmp_path: Path) -> None:
    tomorrow = _next_utc_days()
    budget = spent_stack.info["budget"]  # what the demo checks against: the stack's own settings
    assert (budget["daily_credit_limit"], sum(budget["credits"].values())) == (CHAIN + INPAINT - 1, CHAIN)
    table = _table(spent_stack)
    jobs_before = {item["job_id"] for item in table.scan(ProjectionExpression="job_id")["Items"]}

    result = subprocess.run(
        [sys.executable, "-m", "vary_region_local.demo", "--state-dir", str(spent_stack.state_dir),
         "--out", str(tmp_path / "out"), "--timeout", "5"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=user_env(tmp_path / "home"), check=False,
    )  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Using the local stack that is already running" in result.stdout
    assert "vary-region" in result.stdout and "usage" in result.stdout  # the user sees the ledger it read
    error = result.stderr
    assert "the local stack's credit budget is spent" in error, error
    assert f"this UTC day's limit (DAILY_CREDIT_LIMIT) is {CHAIN + INPAINT - 1} credits" in error, error
    assert f"costs {CHAIN}" in error and "Nothing was submitted" in error
    assert any(f"held until {day} (BUDGET_EXCEEDED)" in error for day in tomorrow), error
    assert "make local" in error and "DAILY_CREDIT_LIMIT=" in error, "how to go on"
    jobs_after = {item["job_id"] for item in table.scan(ProjectionExpression="job_id")["Items"]}
    assert jobs_after == jobs_before, "the demo submitted nothing"
    assert spent_stack.process is not None and spent_stack.process.poll() is None, "the user's stack is left running"
    assert not (tmp_path / "out").exists()
