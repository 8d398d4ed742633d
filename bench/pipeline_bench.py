"""Jobs through the whole local stack: moto, the simulator at zero delay, the real handlers.

The figures are the pipeline's own overhead per job, read from the job items' timestamps:
- upload seen -> submitted: the item's `created_at` -> `submitted_at` (one submit invocation);
- final webhook answered: the simulator's POST of the final webhook, from sending to the answer
  (the webhook function records the report and hands it to the completion queue);
- final webhook -> COMPLETED: when the simulator started POSTing the final webhook -> the item's
  `completed_at` (the completion worker re-fetches, copies the five images and completes the job);
- reconciler recovery: jobs whose every webhook was lost, finished by the reconciler (Fetch, then
  the completion queue), in jobs per minute.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
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
# As Lambda would scale them under this load (the local stack's default is one of each).
WEBHOOK_CONTAINERS = 4
COMPLETION_CONTAINERS = 4
# The webhook copies nothing any more: answering a final report must stay well inside the 2-30 s
# that webhook senders wait (issue #12).
WEBHOOK_ANSWER_P95_TARGET_MS = 100.0
# 10,000 jobs in an hour, all of whose webhooks are lost, must not outrun the reconciler.
RECOVERY_TARGET_JOBS_PER_MINUTE = 10_000 / 60
# The capacity model's burst (10,000 jobs in an hour): the pace at which the webhook's answer is
# judged. The all-at-once burst before it saturates this one process (moto, the simulator and every
# handler share a GIL), which says more about the local stack than about the webhook.
PACED_JOBS_PER_SECOND = 10_000 / 3600


@dataclass
class FinalWebhookClock:
    """Per task id: when the simulator began POSTing the final webhook, when the webhook function
    began handling it (the local stack runs one warm container, so requests may queue in between),
    and when it had answered."""

    posted: dict[str, float] = field(default_factory=dict)
    handled: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    round_trips: list[float] = field(default_factory=list)  # the simulator's final POSTs, seconds
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


class EventTap:
    """A queue subscribed to the stack's bus, read continuously: when each state-change event arrives,
    against the `updated_at` of the write it tells (both clocks are this machine's)."""

    def __init__(self, stack: Any) -> None:
        self._sqs, self._events = boto3.client("sqs"), boto3.client("events")
        self._bus = stack.info.event_bus_name
        self.name = f"bench-tap-{uuid.uuid4().hex[:6]}"
        self._url = self._sqs.create_queue(QueueName=self.name)["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        pattern = {"source": ["vary-region"], "detail-type": ["Vary Region Job State Change"]}
        self._events.put_rule(Name=self.name, EventBusName=self._bus, EventPattern=json.dumps(pattern))
        self._events.put_targets(Rule=self.name, EventBusName=self._bus, Targets=[{"Id": "tap", "Arn": arn}])
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-event-tap", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            messages = self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            arrived = time.time()
            for message in messages.get("Messages", []):
                detail = json.loads(message["Body"]).get("detail") or {}
                if detail.get("updated_at"):
                    self.latencies_ms.append((arrived - _epoch(detail["updated_at"])) * 1000)
            entries = [
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages.get("Messages", []))
            ]
            if entries:
                self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(timeout=5)
        return list(self.latencies_ms)


def instrument(stack: Any) -> FinalWebhookClock:
    """Timestamp the final webhooks at both ends, by wrapping two methods of this stack's instances
    (the simulator's delivery and the loaded webhook module's handler): no product code changes."""
    clock = FinalWebhookClock()
    sim = stack.simulator
    deliver: Callable[..., None] = sim._deliver

    def timed_deliver(task: Any, payload: dict[str, Any], *, final: bool) -> None:
        if not final or not task.webhook_url:  # the recovery jobs' tasks send no webhook at all
            deliver(task, payload, final=final)
            return
        clock.mark(clock.posted, task.task_id)
        sent = time.perf_counter()
        deliver(task, payload, final=final)
        with clock.changed:
            clock.round_trips.append(time.perf_counter() - sent)
            clock.changed.notify_all()

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


def _mask_data_url(size: tuple[int, int] = (512, 512)) -> str:
    mask = Image.new("L", size, 0)
    w, h = size
    mask.paste(255, (w // 4, h // 4, w * 5 // 8, h * 5 // 8))  # white: the region the provider redraws
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


def run(jobs: int, paced_jobs: int, recovery_jobs: int, timeout_seconds: float) -> Section:
    """Run the stack and the jobs in a subprocess; its logs are kept only when it fails."""
    with tempfile.TemporaryDirectory(prefix="vary-region-bench-") as scratch:
        result, log = Path(scratch) / "pipeline.json", Path(scratch) / "pipeline.log"
        command = [sys.executable, "-m", "bench.pipeline_bench", "--jobs", str(jobs), "--timeout", str(timeout_seconds)]
        command += ["--paced-jobs", str(paced_jobs), "--recovery-jobs", str(recovery_jobs)]
        with log.open("wb") as output:
            done = subprocess.run(
                [*command, "--output", str(result)],
                cwd=Path(__file__).resolve().parents[1],
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
                stdout=output,
                stderr=subprocess.STDOUT,
                # Each of the three phases (burst, paced, recovery) may take its own timeout.
                timeout=3 * timeout_seconds + 120,
                check=False,
            )
        if done.returncode != 0 or not result.exists():
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"the pipeline benchmark failed (exit {done.returncode}):\n{tail}")
        data = json.loads(result.read_text())
    figures = [Figure(**figure) for figure in data["figures"]]
    return Section(data["title"], figures, data["details"], data["findings"])


def measure(jobs: int, paced_jobs: int, recovery_jobs: int, timeout_seconds: float) -> Section:
    from vary_region_local.stack import LocalStack, StackOptions

    section = Section("pipeline")
    options = StackOptions(
        simulator_step_delay=0,
        max_active_tasks=100_000,
        reconcile_period_seconds=0,
        reconcile_quiet_seconds=1,
        state_dir=None,
        webhook_containers=WEBHOOK_CONTAINERS,
        completion_containers=COMPLETION_CONTAINERS,
    )
    with LocalStack(options) as stack:
        stack.simulator.image_size = SIMULATED_PICTURE
        clock = instrument(stack)
        assert stack.info is not None
        tap = EventTap(stack)
        s3 = boto3.client("s3")
        table = boto3.resource("dynamodb").Table(stack.info.table)
        prefix = f"bench-{uuid.uuid4().hex[:6]}-"
        document = {
            "parent_task_id": "bench-parent",
            "prompt": "a paper lantern",
            "mask": _mask_data_url(SIMULATED_PICTURE),
        }
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
            # moto may briefly show an item without its status (see tests/support/waits.wait_for_job).
            done = len(items) == jobs and all(i.get("status") in FINAL_STATUSES for i in items.values())
            if done or time.monotonic() >= deadline:
                break
            time.sleep(2)
        time.sleep(2)  # the last state changes' events, still on their way through the stream and the bus
        publish_ms = tap.stop()
        sim_stats = stack.simulator.stats()
        with clock.lock:
            burst_trips = list(clock.round_trips)
            clock.round_trips.clear()
        paced_trips = measure_paced(stack, s3, table, clock, body, paced_jobs, timeout_seconds)
        recovery = measure_recovery(stack, table, recovery_jobs, timeout_seconds)
        poller_errors = [error for poller in stack.pollers.values() for error in poller.errors]

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

    answer_ms = [seconds * 1000 for seconds in paced_trips]
    burst_answer_ms = [seconds * 1000 for seconds in burst_trips]
    pace = f"{len(paced_trips)} jobs at {PACED_JOBS_PER_SECOND:.1f}/s"
    section.figures += [
        Figure("pipeline_jobs_completed", "pipeline: jobs completed", len(completed), "jobs", jobs, "min"),
        Figure(
            "pipeline_webhook_answer_p50_ms",
            f"pipeline: final webhook answered p50 ({pace})",
            percentile(answer_ms, 50),
            "ms",
        ),
        Figure(
            "pipeline_webhook_answer_p95_ms",
            f"pipeline: final webhook answered p95 ({pace})",
            percentile(answer_ms, 95),
            "ms",
            WEBHOOK_ANSWER_P95_TARGET_MS,
        ),
        Figure(
            "pipeline_burst_webhook_answer_p95_ms",
            f"pipeline: final webhook answered p95 ({jobs} jobs at once)",
            percentile(burst_answer_ms, 95),
            "ms",
        ),
        Figure("pipeline_jobs_per_second", "pipeline: throughput", len(completed) / elapsed, "jobs/s"),
        Figure(
            "pipeline_publish_p50_ms",
            f"pipeline: state write -> event on the bus p50 ({len(publish_ms)} events)",
            percentile(publish_ms, 50),
            "ms",
        ),
        Figure(
            "pipeline_publish_p95_ms",
            f"pipeline: state write -> event on the bus p95 ({len(publish_ms)} events)",
            percentile(publish_ms, 95),
            "ms",
        ),
        Figure("pipeline_submit_p50_ms", "pipeline: upload seen -> submitted p50", percentile(submit_ms, 50), "ms"),
        Figure("pipeline_submit_p95_ms", "pipeline: upload seen -> submitted p95", percentile(submit_ms, 95), "ms"),
        Figure("pipeline_complete_p50_ms", "pipeline: final webhook -> COMPLETED p50", percentile(finish_ms, 50), "ms"),
        Figure("pipeline_complete_p95_ms", "pipeline: final webhook -> COMPLETED p95", percentile(finish_ms, 95), "ms"),
        Figure(
            "pipeline_recovery_jobs_per_minute",
            f"pipeline: reconciler recovery, {recovery['jobs']} jobs, every webhook lost",
            recovery["jobs_per_minute"],
            "jobs/min",
            RECOVERY_TARGET_JOBS_PER_MINUTE,
            "min",
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
        "completion_containers": COMPLETION_CONTAINERS,
        # Final webhook posted -> handler started (the local front's queue), and handler started ->
        # COMPLETED (the webhook's own work, the completion queue and the worker).
        "final_webhook_queue_ms": {"p50": percentile(queue_ms, 50), "p95": percentile(queue_ms, 95)},
        "final_webhook_handled_to_completed_ms": {"p50": percentile(handler_ms, 50), "p95": percentile(handler_ms, 95)},
        "recovery": recovery,
        "simulator_stats": sim_stats,
        "sqs_poller_errors": poller_errors[:10],
    }
    if len(completed) < jobs:
        section.findings.append(f"pipeline: only {len(completed)}/{jobs} jobs COMPLETED in time; statuses {statuses}")
    return section


def measure_paced(
    stack: Any, s3: Any, table: Any, clock: FinalWebhookClock, body: bytes, jobs: int, timeout: float
) -> list[float]:
    """The final webhooks' round trips for jobs arriving at PACED_JOBS_PER_SECOND (their completions
    run afterwards; the recovery phase checks that the queue drains)."""
    prefix = f"paced-{uuid.uuid4().hex[:6]}-"
    # Deployed, the completion worker copies in processes of its own; here it shares one interpreter
    # (one GIL) with the webhook, so its copies wait in their queue while the webhooks are timed.
    stack.pollers["completion"].pause()
    try:
        start = time.monotonic()
        for n in range(jobs):
            time.sleep(max(0.0, start + n / PACED_JOBS_PER_SECOND - time.monotonic()))
            s3.put_object(Bucket=stack.info.bucket, Key=f"inbox/{prefix}{n:04d}.json", Body=body)
        with clock.changed:
            clock.changed.wait_for(lambda: len(clock.round_trips) >= jobs, timeout)
            trips = list(clock.round_trips)
    finally:
        stack.pollers["completion"].resume()
    deadline = time.monotonic() + timeout  # their completions drain before the next phase starts
    while time.monotonic() < deadline:
        items = _items(table, prefix)
        if len(items) == jobs and all(i.get("status") in FINAL_STATUSES for i in items.values()):
            break
        time.sleep(1)
    return trips


def measure_recovery(stack: Any, table: Any, jobs: int, timeout_seconds: float) -> dict[str, Any]:
    """Jobs in flight whose every webhook was lost, brought home by the reconciler alone.

    The jobs are seeded as the submit function leaves them (claimed, submitted, a task id) with tasks
    created on the simulator without a webhook URL, so the figure is the recovery path's own speed,
    not the submit path's: reconciler runs (Fetch in batches of 20, hand-over to the completion
    queue), then the completion worker (re-fetch, five copies, complete)."""
    import requests
    from vary_region.core.job import timestamp
    from vary_region.store.schema import active_shard

    sim = stack.simulator
    prefix = f"lost-{uuid.uuid4().hex[:6]}-"
    an_hour_ago = timestamp(datetime.now(UTC) - timedelta(hours=1))
    seeding = time.time()
    body = {"parent_task_id": "bench-parent", "prompt": "a paper lantern", "mask": _mask_data_url(SIMULATED_PICTURE)}
    http = requests.Session()

    def create_task(_: int) -> str:
        answer = http.post(f"{sim.base_url}/inpaint", json=body, headers={"Authorization": sim.api_key}, timeout=30)
        return str(answer.json()["task_id"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        task_ids = list(pool.map(create_task, range(jobs)))
    # The items as the submit function leaves a job it submitted (claimed, task id, in the open-jobs
    # index), written 25 to a call: 3 conditional writes a job would make seeding the slowest part.
    with table.batch_writer() as batch:
        for n, task_id in enumerate(task_ids):
            job_id = f"{prefix}{n:04d}"
            batch.put_item(
                Item={
                    "job_id": job_id,
                    "status": "SUBMITTED",
                    "task_id": task_id,
                    "created_at": an_hour_ago,
                    "created_day": an_hour_ago[:10],
                    "updated_at": an_hour_ago,
                    "submit_claim": "bench",
                    "submit_claimed_at": an_hour_ago,
                    "submitted_at": an_hour_ago,
                    "webhook_secret_hash": "no-webhook",
                    "parent_task_id": "bench-parent",
                    "metadata_json": "{}",
                    "active": active_shard(job_id),
                }
            )
    sim.wait_idle(timeout=60)
    seeded = time.time()

    started = time.time()
    deadline = time.monotonic() + timeout_seconds
    runs, items = 0, {}
    while time.monotonic() < deadline:
        stack.run_reconciler()
        runs += 1
        time.sleep(3)
        items = _items(table, prefix)
        if all(i.get("status") in FINAL_STATUSES for i in items.values()):
            break
    completed = [_epoch(i["completed_at"]) for i in items.values() if i.get("status") == "COMPLETED"]
    elapsed = (max(completed) - started) if completed else float("nan")
    return {
        "jobs": jobs,
        "completed": len(completed),
        "reconciler_runs": runs,
        "seed_seconds": seeded - seeding,
        "elapsed_seconds": elapsed,
        "jobs_per_minute": len(completed) / elapsed * 60 if completed and elapsed > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Push jobs through the local stack (run by bench.run).")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--paced-jobs", type=int, required=True, help="jobs arriving at the burst rate")
    parser.add_argument("--recovery-jobs", type=int, required=True, help="jobs whose webhooks are all lost")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait for the jobs to finish")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    section = measure(args.jobs, args.paced_jobs, args.recovery_jobs, args.timeout)
    args.output.write_text(json.dumps(asdict(section)))


if __name__ == "__main__":
    main()
