"""Every AccessDenied a deployed function met, named by function and action.

With `AUTH=true` the emulator answers a call the function's role does not allow as AWS does
("User: arn:aws:sts::...:assumed-role/<role>/<function> is not authorized to perform: <action> on
resource: ..."). The functions log what failed; the emulator logs each invocation's output. A
rehearsal whose paths all passed still fails on a denial: a function must work with exactly the
statements the template gives it, not around a refused call.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import boto3

from vary_region_local.rehearsal.report import Report
from vary_region_local.rehearsal.stack import DeployedStack

_DENIED = re.compile(
    r"assumed-role/[^/\s]+/(?P<function>[^\s\\\"]+) is not authorized to perform: "
    r"(?P<action>[A-Za-z0-9-]+:[A-Za-z0-9*]+)"
)


def found_in(text: str) -> set[tuple[str, str]]:
    """(function, action) of each denial named in `text`."""
    return {(m["function"], m["action"]) for m in _DENIED.finditer(text)}


def describe(found: set[tuple[str, str]]) -> str:
    return "AccessDenied: " + "; ".join(f"{function} denied {action}" for function, action in sorted(found))


class DenialWatch:
    """The denials seen so far: the emulator's log (read on from where the last look stopped) and the
    functions' log groups (the webhook function's output reaches only its group). A path waiting for
    a job fails at once, naming the action, instead of running into its time-out."""

    GROUPS_EVERY = 3.0  # seconds between two reads of the log groups: five API calls each

    def __init__(self, emulator_log: Path, stack: DeployedStack) -> None:
        self.emulator_log, self.stack = emulator_log, stack
        self._offset, self._carry, self._groups_read = 0, "", 0.0
        self._since_ms = 0  # log events before this are not looked at (an IAM mutant's own window)
        self.found: set[tuple[str, str]] = set()

    def reset(self) -> None:
        """Forget what was found: from now on only new denials count (one IAM mutant after another)."""
        self.look(groups_now=True)
        self.found, self._since_ms = set(), int(time.time() * 1000)

    def look(self, *, groups_now: bool = False) -> set[tuple[str, str]]:
        if self.emulator_log.is_file():
            with self.emulator_log.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
            self._offset += len(chunk)
            lines = (self._carry + chunk.decode(errors="replace")).split("\n")
            self._carry = lines.pop()  # a line still being written is read whole next time
            self.found |= found_in("\n".join(lines))
        if groups_now or time.monotonic() - self._groups_read >= self.GROUPS_EVERY:
            self._groups_read = time.monotonic()
            texts = _function_logs(self.stack, self._since_ms)
            self.found |= {denial for text in texts for denial in found_in(text)}
        return self.found

    def into(self, report: Report) -> None:
        name = "IAM: every function within its role's statements"
        found = self.look(groups_now=True)
        if found:
            report.failed.append((name, describe(found)))
            print(f"--> {name}\n    FAIL {describe(found)}", flush=True)
        else:
            report.passed.append((name, "no AccessDenied in any function's log or the emulator's"))


def _function_logs(stack: DeployedStack, since_ms: int = 0) -> list[str]:
    logs: Any = boto3.client("logs")
    texts = []
    for logical, physical in stack.resources.items():
        if not logical.endswith("Function") or not logical[0].isupper():
            continue
        group = f"/aws/lambda/{physical}"
        try:
            pages = logs.get_paginator("filter_log_events").paginate(
                logGroupName=group, filterPattern='"not authorized"', startTime=since_ms
            )
            texts += [event["message"] for page in pages for event in page.get("events", [])]
        except logs.exceptions.ResourceNotFoundException:
            continue
    return texts
