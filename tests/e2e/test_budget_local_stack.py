"""End to end, as a user sets a budget: `make local` started with DAILY_CREDIT_LIMIT and OVER_BUDGET in
its environment (a stack process of its own), jobs submitted with the CLI, and `vary-region usage`
telling what was spent, against which limit, and which jobs wait for credits."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import StackProcess, user_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    home = tmp_path_factory.mktemp("home")
    env = user_env(home) | {"DAILY_CREDIT_LIMIT": "6", "OVER_BUDGET": "reject"}  # room for one inpaint (4)
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

    second = _submit(budget_stack, tmp_path, "e2e-budget-2")  # 4 more credits: over the day's 6
    refused = _cli(budget_stack, tmp_path, "watch", second, "--timeout", "30", "--interval", "0.1")

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "REJECTED: BUDGET_EXCEEDED" in refused.stdout
    usage = _cli(budget_stack, tmp_path, "usage", "--json")
    assert usage.returncode == 0, usage.stderr
    day, month = json.loads(usage.stdout)["periods"]
    assert (day["period"], day["reserved"], day["spent"], day["limit"], day["left"]) == ("day", 4, 4, 6, 2)
    assert (month["reserved"], month["limit"]) == (4, None)
    table = _cli(budget_stack, tmp_path, "usage")
    assert table.returncode == 0 and "no jobs held for credits" in table.stdout, table.stdout
    assert table.stdout.splitlines()[0].split() == ["CREDITS", "RESERVED", "SPENT", "IN", "FLIGHT", "LIMIT", "LEFT"]
