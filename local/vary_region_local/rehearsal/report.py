"""What the rehearsal checked: each path passed, failed (and why) or skipped (and why)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class PathFailed(AssertionError):
    pass


@dataclass
class Report:
    passed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def run(self, name: str, check: Callable[[], str]) -> None:
        print(f"--> {name}", flush=True)
        started = time.monotonic()
        try:
            detail = check()
        except Exception as exc:  # a path that breaks is a failed path; the others still run
            self.failed.append((name, f"{type(exc).__name__}: {exc}" if not isinstance(exc, PathFailed) else str(exc)))
            print(f"    FAIL {self.failed[-1][1]} [{time.monotonic() - started:.0f}s]", flush=True)
        else:
            self.passed.append((name, detail))
            print(f"    ok   {detail} [{time.monotonic() - started:.0f}s]", flush=True)

    def skip(self, name: str, why: str) -> None:
        """A path an emulator gap blocks: printed and summed up as SKIPPED with its reason, never passed."""
        print(f"--> {name}\n    SKIPPED {why}", flush=True)
        self.skipped.append((name, why))
