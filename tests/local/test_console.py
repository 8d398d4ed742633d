"""The local stack's console when idle: the reconciler runs every couple of seconds and publishes
the account's balance each run, as deployed; the console shows that line only when it changes."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from vary_region_local.console import RECONCILER_THREAD, RepeatedScheduledMetricsHidden, WholeLines
from vary_region_local.process import REPO_ROOT, clean_environment, read_stack_file


def _balance_line(credits: int, timestamp: int) -> str:
    """What Powertools prints for the reconciler's ProviderCredits metric."""
    definition = {"Namespace": "VaryRegion", "Dimensions": [["service"]], "Metrics": [{"Name": "ProviderCredits"}]}
    document = {"_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [definition]}, "service": "vary-region"}
    return json.dumps(document | {"ProviderCredits": [float(credits)]})


def _written_by(thread_name: str, console: RepeatedScheduledMetricsHidden, *texts: str) -> None:
    def write() -> None:
        for text in texts:
            print(text, file=console)  # two writes, as Powertools' print makes: the line, then its end

    thread = threading.Thread(target=write, name=thread_name)
    thread.start()
    thread.join()


def test_the_timer_s_metrics_line_is_shown_again_only_when_it_changes() -> None:
    shown = io.StringIO()
    console = RepeatedScheduledMetricsHidden(shown)
    _written_by(RECONCILER_THREAD, console, _balance_line(1000, 1), _balance_line(1000, 2), "not metrics")
    _written_by(RECONCILER_THREAD, console, _balance_line(1000, 3), _balance_line(996, 4), _balance_line(996, 5))
    _written_by("sqs-poller-0", console, _balance_line(996, 6), _balance_line(996, 7))

    lines = shown.getvalue().splitlines()
    assert lines == [
        _balance_line(1000, 1),
        "not metrics",
        _balance_line(996, 4),
        _balance_line(996, 6),  # an invocation's own metrics are never hidden, however alike
        _balance_line(996, 7),
    ]


def test_an_idle_local_stack_prints_its_balance_once(tmp_path: Path) -> None:
    log_path = tmp_path / "stack.log"
    command = [
        sys.executable, "-m", "vary_region_local.stack",
        "--aws-port", "0", "--webhook-port", "0", "--simulator-port", "0",
        "--state-dir", str(tmp_path), "--reconcile-period", "0.2",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        stack = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_environment(),
            cwd=REPO_ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while read_stack_file(tmp_path / "stack.json") is None:
            assert stack.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        time.sleep(2.0)  # about ten reconciler runs, each publishing the same balance
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=30)

    output = log_path.read_text()
    balance_lines = [line for line in output.splitlines() if '"ProviderCredits"' in line]
    assert len(balance_lines) == 1, output[-3000:]


def test_two_functions_printing_at_once_never_share_a_line() -> None:
    """`print` writes the text, then its newline: a second thread's whole print can fall between."""
    shown = io.StringIO()
    console = WholeLines(shown)
    first_text_written, second_done = threading.Event(), threading.Event()

    def first() -> None:
        console.write('{"_aws": "first"}')
        first_text_written.set()
        second_done.wait(5)
        console.write("\n")

    def second() -> None:
        first_text_written.wait(5)
        print('{"level": "INFO"}', file=console)
        console.write("a line left open")
        console.end_of_invocation()
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert shown.getvalue().splitlines() == ['{"level": "INFO"}', "a line left open", '{"_aws": "first"}']
