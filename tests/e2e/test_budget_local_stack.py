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
from vary_region.settings import GENERATIONS

from tests.e2e.conftest import API_VERSION, StackProcess, user_env

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
