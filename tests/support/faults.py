"""Faults a test injects into the running stack: a job in flight whose webhooks are dropped (and its
ordinary end), an S3 outage on error.json, provider tasks held until released."""

from __future__ import annotations

from typing import Any

from tests.support.builders import new_job_id, post_webhook, secret_of, upload_job
from tests.support.waits import FINAL_STATUSES, final_body, get_job, wait_for_job, wait_for_task_id


class InFlightJob:
    """A submitted job whose provider webhooks are dropped, so the test speaks for the provider."""

    def __init__(self, job_id: str, task_id: str, secret: str, item: dict[str, Any]) -> None:
        self.job_id, self.task_id, self.secret, self.item = job_id, task_id, secret, item

    def __repr__(self) -> str:  # keep the secret out of assertion messages
        return f"InFlightJob(job_id={self.job_id!r}, task_id={self.task_id!r})"


def start_job_in_flight(
    s3: Any, bucket: str, table: Any, sim: Any, prefix: str = "flight", job_id: str | None = None, **faults: Any
) -> InFlightJob:
    """Upload a job with `drop_webhooks="all"` (plus `faults`), wait for its task id, and return it
    with the real webhook secret (read from the simulator, which received it at submit time)."""
    sim.set_faults(**({"drop_webhooks": "all"} | faults))
    job_id = job_id or new_job_id(prefix)
    upload_job(s3, bucket, job_id)
    item = wait_for_task_id(table, job_id)
    task = sim.task(item["task_id"])
    secret = secret_of(task)
    assert secret, "the simulator must have received a webhook secret"
    return InFlightJob(job_id, item["task_id"], secret, item)


def settle_job(stack: Any, sim: Any, table: Any, job: InFlightJob, timeout: float = 20.0) -> dict[str, Any]:
    """Finish an in-flight job the ordinary way (its real final webhook), so that it does not linger as
    open work for later reconciler runs. Faults on the image host must be off."""
    item = get_job(table, job.job_id)
    if item and item["status"] in FINAL_STATUSES:
        return item
    post_webhook(stack, job.job_id, final_body(sim, job.task_id), secret=job.secret)
    return wait_for_job(table, job.job_id, timeout=timeout)


def fail_error_json_write_once(stack: Any, job_id: str, monkeypatch: Any) -> list[str]:
    """Make the running submit container's first write of the job's error.json fail (an S3 outage at
    the worst moment); returns the list that records the failed key."""
    files = stack.functions["submit"].module.submitter._files
    real_write = files.write_json
    failures: list[str] = []

    def write_json_failing_once(key: str, document: dict[str, Any]) -> None:
        if key == f"results/{job_id}/error.json" and not failures:
            failures.append(key)
            raise ConnectionError("simulated S3 outage while writing error.json")
        real_write(key, document)

    monkeypatch.setattr(files, "write_json", write_json_failing_once)
    return failures


def hold_provider_tasks(sim: Any, monkeypatch: Any) -> Any:
    """Tasks the simulator creates from now on count as running but make no progress until the
    returned event is set: a test can fill every provider slot without racing the tasks' ends.
    Set the event (in a `finally`) before the test ends, or the tasks' workers wait for a minute."""
    import threading

    release = threading.Event()
    run_task = sim._run_task

    def run_when_released(task: Any) -> None:
        release.wait(timeout=60)
        run_task(task)

    monkeypatch.setattr(sim, "_run_task", run_when_released)
    return release
