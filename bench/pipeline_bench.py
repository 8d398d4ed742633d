"""Jobs through the whole local stack: moto, the simulator at zero delay, the real handlers.

The figures are the pipeline's own overhead per job, read from the job items' timestamps:
- upload seen -> submitted: the item's `created_at` -> `submitted_at` (one submit invocation);
- final webhook -> COMPLETED: when the simulator started POSTing the final webhook -> the item's
  `completed_at` (the webhook function copies the five images before it completes the job).
The simulator and the pipeline share this machine's clock, so the two ends compare directly.

The stack runs in a process of its own (`python -m bench.pipeline_bench`): the handlers' Powertools
singletons must be created with the stack's environment, not the benchmark's, and their log lines
(one JSON line per step, as in CloudWatch) go to a file instead of the benchmark's table.

The webhook function gets several containers, as Lambda would give it under this load; with the
local stack's default of one, every job's four webhooks wait in one queue and "final webhook ->
COMPLETED" measures that queue (20-45 s at p50), not the pipeline. The containers share one process,
so their log lines may carry each other's job keys; the benchmark reads none of them.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from PIL import Image

from bench.report import Figure, Section, percentile

FINAL_STATUSES = ("COMPLETED", "FAILED", "REJECTED")
# The simulator draws every result with PIL on this machine's two cores: at its default 512x512 that
# is ~150 ms of CPU per task, which would make the figure the fake provider's speed, not the
# pipeline's. Small pictures keep every step of the pipeline (five copies per job included).
SIMULATED_PICTURE = (128, 128)
# Four is where the queue of webhooks disappeared on this 2-core machine (one: ~25 s at p50; two: ~2 s).
WEBHOOK_CONTAINERS = 4


@dataclass
class FinalWebhookClock:
    """Per task id: when the simulator began POSTing the final webhook, when the webhook function
    began handling it (the local stack runs one warm container, so requests may queue in between),
    and when it had answered."""

    posted: dict[str, float] = field(default_factory=dict)
    handled: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def mark(self, table: dict[str, float], task_id: str) -> None:
        now = time.time()
        with self.changed:
            table.setdefault(task_id, now)  # a repeated delivery must not move the first one
            self.changed.notify_all()

    def wait_answered(self, count: int, timeout: float) -> bool:
        """Wait, without polling DynamoDB (moto serialises its requests, so a scan every few
        hundred ms would slow the very pipeline being measured), for `count` final webhooks."""
        with self.changed:
            return self.changed.wait_for(lambda: len(self.answered) >= count, timeout)


def instrument(stack: Any) -> FinalWebhookClock:
    """Timestamp the final webhooks at both ends, by wrapping two methods of this stack's instances
    (the simulator's delivery and the loaded webhook module's handler): no product code changes."""
    clock = FinalWebhookClock()
    sim = stack.simulator
    deliver: Callable[..., None] = sim._deliver

    def timed_deliver(task: Any, payload: dict[str, Any], *, final: bool) -> None:
        if final:
            clock.mark(clock.posted, task.task_id)
        deliver(task, payload, final=final)

    sim._deliver = timed_deliver

    for module in stack.functions["webhook"].modules:  # every container of the webhook function
        module.lambda_handler = _timed(module.lambda_handler, clock)  # invoke looks it up on every call
    return clock


def _timed(handler: Callable[[dict[str, Any], Any], Any], clock: FinalWebhookClock) -> Callable[..., Any]:
    """The webhook handler, noting when a final webhook's handling starts and ends."""

    def timed_handler(event: dict[str, Any], context: Any) -> Any:
        try:
            body = json.loads(event.get("body") or "{}")
        except ValueError:
            body = None
        final = isinstance(body, dict) and "task_id" in body and body.get("status") != "processing"
        if final:
            clock.mark(clock.handled, str(body["task_id"]))
        try:
            return handler(event, context)
        finally:
            if final:
                clock.mark(clock.answered, str(body["task_id"]))

    return timed_handler


def _mask_data_url() -> str:
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (128, 128, 320, 320))  # white: the region the provider redraws
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _epoch(stamp: str) -> float:
    """Items store UTC as `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _items(table: Any, prefix: str) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items.update({i["job_id"]: i for i in page.get("Items", []) if str(i["job_id"]).startswith(prefix)})
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _milliseconds(pairs: list[tuple[float, float]]) -> list[float]:
    return [(end - start) * 1000 for start, end in pairs]


def run(jobs: int, timeout_seconds: float) -> Section:
    """Run the stack and the jobs in a subprocess; its logs are kept only when it fails."""
    with tempfile.TemporaryDirectory(prefix="vary-region-bench-") as scratch:
        result, log = Path(scratch) / "pipeline.json", Path(scratch) / "pipeline.log"
        command = [sys.executable, "-m", "bench.pipeline_bench", "--jobs", str(jobs), "--timeout", str(timeout_seconds)]
        with log.open("wb") as output:
            done = subprocess.run(
                [*command, "--output", str(result)],
                cwd=Path(__file__).resolve().parents[1],
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout_seconds + 120,
                check=False,
            )
        if done.returncode != 0 or not result.exists():
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"the pipeline benchmark failed (exit {done.returncode}):\n{tail}")
        data = json.loads(result.read_text())
    figures = [Figure(**figure) for figure in data["figures"]]
    return Section(data["title"], figures, data["details"], data["findings"])


def measure(jobs: int, timeout_seconds: float) -> Section:
    from vary_region_local.stack import LocalStack, StackOptions

    section = Section("pipeline")
    options = StackOptions(
        simulator_step_delay=0,
        max_active_tasks=1000,
        reconcile_period_seconds=0,
        state_dir=None,
        webhook_containers=WEBHOOK_CONTAINERS,
    )
    with LocalStack(options) as stack:
        stack.simulator.image_size = SIMULATED_PICTURE
        clock = instrument(stack)
        assert stack.info is not None
        s3 = boto3.client("s3")
        table = boto3.resource("dynamodb").Table(stack.info.table)
        prefix = f"bench-{uuid.uuid4().hex[:6]}-"
        document = {"parent_task_id": "bench-parent", "prompt": "a paper lantern", "mask": _mask_data_url()}
        body = json.dumps(document).encode()

        started = time.time()
        for n in range(jobs):  # one object per job: the inline form, so `created_at` is the whole job's arrival
            s3.put_object(Bucket=stack.info.bucket, Key=f"inbox/{prefix}{n:04d}.json", Body=body)
        uploaded = time.time()

        deadline = time.monotonic() + timeout_seconds
        clock.wait_answered(jobs, timeout_seconds)
        items: dict[str, dict[str, Any]] = {}
        while True:  # every final webhook answered: normally one scan finds every job finished
            items = _items(table, prefix)
            # moto may briefly show an item without its status (see tests/builders.wait_for_job).
            done = len(items) == jobs and all(i.get("status") in FINAL_STATUSES for i in items.values())
            if done or time.monotonic() >= deadline:
                break
            time.sleep(2)
        sim_stats = stack.simulator.stats()
        poller_errors = list(stack._poller.errors) if stack._poller else []

    completed = [i for i in items.values() if i.get("status") == "COMPLETED"]
    submit_pairs = [(_epoch(i["created_at"]), _epoch(i["submitted_at"])) for i in completed]
    finish_pairs = [
        (clock.posted[i["task_id"]], _epoch(i["completed_at"])) for i in completed if i["task_id"] in clock.posted
    ]
    queue_pairs = [(clock.posted[t], clock.handled[t]) for t in clock.handled if t in clock.posted]
    handler_pairs = [
        (clock.handled[i["task_id"]], _epoch(i["completed_at"])) for i in completed if i["task_id"] in clock.handled
    ]
    last_completed = max((_epoch(i["completed_at"]) for i in completed), default=float("nan"))
    elapsed = last_completed - started
    submit_ms, finish_ms = _milliseconds(submit_pairs), _milliseconds(finish_pairs)
    queue_ms, handler_ms = _milliseconds(queue_pairs), _milliseconds(handler_pairs)

    section.figures += [
        Figure("pipeline_jobs_completed", "pipeline: jobs completed", len(completed), "jobs", jobs, "min"),
        Figure("pipeline_jobs_per_second", "pipeline: throughput", len(completed) / elapsed, "jobs/s"),
        Figure("pipeline_submit_p50_ms", "pipeline: upload seen -> submitted p50", percentile(submit_ms, 50), "ms"),
        Figure("pipeline_submit_p95_ms", "pipeline: upload seen -> submitted p95", percentile(submit_ms, 95), "ms"),
        Figure("pipeline_complete_p50_ms", "pipeline: final webhook -> COMPLETED p50", percentile(finish_ms, 50), "ms"),
        Figure("pipeline_complete_p95_ms", "pipeline: final webhook -> COMPLETED p95", percentile(finish_ms, 95), "ms"),
        # The same interval without the wait in the local stack's queue of webhooks.
        Figure(
            "pipeline_handler_p50_ms",
            "pipeline: final webhook handled -> COMPLETED p50",
            percentile(handler_ms, 50),
            "ms",
        ),
        Figure(
            "pipeline_handler_p95_ms",
            "pipeline: final webhook handled -> COMPLETED p95",
            percentile(handler_ms, 95),
            "ms",
        ),
    ]
    statuses: dict[str, int] = {}
    for item in items.values():
        statuses[str(item.get("status"))] = statuses.get(str(item.get("status")), 0) + 1
    section.details = {
        "jobs": jobs,
        "statuses": statuses,
        "upload_seconds": uploaded - started,
        "elapsed_seconds": elapsed,
        "simulated_picture": list(SIMULATED_PICTURE),
        "webhook_containers": WEBHOOK_CONTAINERS,
        # The completion overhead split in two: waiting in the local stack's queue of webhooks,
        # then the handler itself (re-fetch, five copies, result.json, the conditional write).
        "final_webhook_queue_ms": {"p50": percentile(queue_ms, 50), "p95": percentile(queue_ms, 95)},
        "simulator_stats": sim_stats,
        "sqs_poller_errors": poller_errors[:10],
    }
    queue_p50, handler_p50 = percentile(queue_ms, 50), percentile(handler_ms, 50)
    if queue_p50 > 2 * handler_p50:
        failed = sim_stats.get("webhooks_failed", 0)
        total = failed + sim_stats.get("webhooks_sent", 0)
        section.findings.append(
            "pipeline: final webhook -> COMPLETED is mostly waiting. At zero delay all jobs' webhooks arrive "
            f"within seconds, faster than the local stack's {WEBHOOK_CONTAINERS} webhook containers handle them: "
            f"wait p50 {queue_p50 / 1000:.1f} s / p95 {percentile(queue_ms, 95) / 1000:.1f} s, then the handler "
            f"p50 {handler_p50:.0f} ms / p95 {percentile(handler_ms, 95):.0f} ms. The simulator gave up on "
            f"{failed} of {total} webhook POSTs (its 5 s timeout) while they waited; the stack still handled "
            "them. Deployed, Lambda scales containers with the load, so the handler figures are the pipeline's own."
        )
    if len(completed) < jobs:
        section.findings.append(f"pipeline: only {len(completed)}/{jobs} jobs COMPLETED in time; statuses {statuses}")
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Push jobs through the local stack (run by bench.run).")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait for the jobs to finish")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    section = measure(args.jobs, args.timeout)
    args.output.write_text(json.dumps(asdict(section)))


if __name__ == "__main__":
    main()
