"""The local stack's console: what the functions print, as CloudWatch Logs would keep it, except
the scheduled reconciler's metrics line when it only repeats the last one.

Deployed, the reconciler runs every minute or more and publishes the account's balance
(ProviderCredits) on every run: the low-balance alarm needs a value each period. The local stack
runs it every 2 s, so that a lost webhook is recovered in seconds, and an idle stack's console then
showed the same balance every 2 s. The line is hidden here, not in the function, so the function
emits what it emits deployed.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

RECONCILER_THREAD = "reconciler"  # the name of the stack's timer thread that runs the reconciler


class RepeatedScheduledMetricsHidden:
    """A text stream over `stream`: lines written by the reconciler's timer thread go through one
    at a time, and a CloudWatch embedded-metric-format line among them is dropped when it equals,
    its timestamp aside, the last one shown. Other threads write straight through."""

    def __init__(self, stream: TextIO, thread_name: str = RECONCILER_THREAD) -> None:
        self._stream = stream
        self._thread_name = thread_name
        self._partial = ""  # only the timer thread touches these two
        self._last_shown: Any = None

    def write(self, text: str) -> int:
        if threading.current_thread().name != self._thread_name:
            return self._stream.write(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            if not self._repeats_last_metrics(line):
                self._stream.write(line + "\n")
        return len(text)

    def _repeats_last_metrics(self, line: str) -> bool:
        try:
            document = json.loads(line)
        except ValueError:
            return False
        if not isinstance(document, dict) or not isinstance(document.get("_aws"), dict):
            return False
        metrics = {key: value for key, value in document.items() if key != "_aws"}
        metrics["_definitions"] = document["_aws"].get("CloudWatchMetrics")
        if metrics == self._last_shown:
            return True
        self._last_shown = metrics
        return False

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...: the stream's own
        return getattr(self._stream, name)


class WholeLines:
    """A text stream over `stream` where each thread's text goes through in whole lines, one write
    per line under a lock. Deployed, each invocation has a stdout of its own; here concurrent
    invocations share one, and `print` writes its text and its newline separately, so two
    functions' JSON lines (an EMF document and a log line) could be glued into one."""

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream
        self._lock = threading.Lock()
        self._partial = threading.local()

    def write(self, text: str) -> int:
        held = getattr(self._partial, "text", "") + text
        whole, newline, rest = held.rpartition("\n")
        self._partial.text = rest
        if newline:
            with self._lock:
                self.wrapped.write(whole + newline)
        return len(text)

    def end_of_invocation(self) -> None:
        """Whatever the thread left without a newline, as its own line (CloudWatch ends it too)."""
        held, self._partial.text = getattr(self._partial, "text", ""), ""
        if held:
            with self._lock:
                self.wrapped.write(held + "\n")

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the stream's own
        return getattr(self.wrapped, name)


def whole_lines_stdout() -> WholeLines:
    """sys.stdout as WholeLines, installed again when something (pytest's capture) replaced it."""
    current = sys.stdout
    if isinstance(current, WholeLines):
        return current
    with _INSTALL_LOCK:
        if not isinstance(sys.stdout, WholeLines):
            sys.stdout = WholeLines(sys.stdout)
        return sys.stdout


_INSTALL_LOCK = threading.Lock()
