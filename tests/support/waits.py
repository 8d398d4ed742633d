"""What tests read and wait for: job items, result documents and objects, the simulator's tasks, the
submit queue, and the reconciler run until a job changes; settle_stack before a test that counts calls."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FINAL_STATUSES = ("COMPLETED", "FAILED", "REJECTED")
IN_FLIGHT_STATUSES = ("SUBMITTED", "PROCESSING")


def get_job(table: Any, job_id: str) -> dict[str, Any] | None:
    return table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")


def job_item(table: Any, job_id: str) -> dict[str, Any]:
    """A job's item where the test expects one: a missing item fails here, naming the job."""
    item = get_job(table, job_id)
    assert item is not None, f"job {job_id} has no item"
    return item


def wait_for_status(
    table: Any, job_id: str, statuses: tuple[str, ...] = FINAL_STATUSES, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    item = None
    while time.monotonic() < deadline:
        item = get_job(table, job_id)
        if item and item["status"] in statuses:
            return item
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s; last item: {item}")


def read_json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def read_error_json(s3: Any, bucket: str, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """A job's error.json, waited for: a job's final state is written first and error.json second
    (by design), so the document may land just after the state a test waited for."""
    return json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json", timeout))


# What a job's folder holds besides its outputs: the inputs as the provider got them.
INPUT_COPIES = ("mask.png", "parent.png")


def keys_under(s3: Any, bucket: str, prefix: str, *, inputs: bool = False) -> list[str]:
    """The keys under `prefix`; under results/, the outputs only (images and documents) unless
    `inputs`: mask.png (written when a stage is sent) and parent.png are checked by tests of their own."""
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))
    if inputs or not prefix.startswith("results/"):
        return keys
    return [key for key in keys if key.rsplit("/", 1)[-1] not in INPUT_COPIES]


def wait_for_task_id(table: Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The job item once the submission has recorded the provider's task id."""
    deadline = time.monotonic() + timeout
    item = None
    while time.monotonic() < deadline:
        item = get_job(table, job_id)
        if item and item.get("task_id"):
            return item
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} got no task_id in {timeout}s; last item: {item}")


def wait_until(condition: Any, timeout: float = 20.0, interval: float = 0.05, message: str = "condition") -> Any:
    """Poll `condition()` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)


def wait_for_sim_task(
    sim: Any, task_id: str, statuses: tuple[str, ...] = ("finished", "failed"), timeout: float = 20.0
) -> dict[str, Any]:
    """The simulator's task record once the task reached one of `statuses`."""
    return wait_until(
        lambda: (t := sim.task(task_id)) is not None and t["status"] in statuses and t,
        timeout,
        message=f"simulator task {task_id} in {statuses}",
    )


def final_body(sim: Any, task_id: str) -> dict[str, Any]:
    """The provider's final payload for a task (what its final webhook would carry)."""
    task = wait_for_sim_task(sim, task_id)
    assert task["result"] is not None
    return dict(task["result"])


def run_reconciler_until(
    stack: Any, table: Any, job_id: str, predicate: Any, timeout: float = 20.0, interval: float = 0.2
) -> dict[str, Any]:
    """Run the reconciler (as its schedule would) until the job item satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    item = None
    while time.monotonic() < deadline:
        stack.run_reconciler()
        item = get_job(table, job_id)
        if item and predicate(item):
            return item
        time.sleep(interval)
    raise AssertionError(
        f"the reconciler did not bring job {job_id} to the expected state in {timeout}s; last item: {item}"
    )


def object_version(s3: Any, bucket: str, key: str) -> tuple[str, Any]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return head["ETag"], head["LastModified"]


def submit_queue_in_use(stack: Any, include_delayed: bool = False) -> int:
    """Messages on the submit queue that are waiting or being handled (and, if asked, delayed ones:
    jobs held back for a provider slot)."""
    import boto3

    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    if include_delayed:
        names.append("ApproximateNumberOfMessagesDelayed")
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=stack.info.queue_url, AttributeNames=names)[
        "Attributes"
    ]
    return sum(int(attributes[name]) for name in names)


def wait_for_queue_drained(stack: Any, timeout: float = 20.0, include_delayed: bool = False) -> None:
    """Every S3 notification sent so far has been handled and deleted (moto enqueues them during the
    PUT, so once this returns the submit function has seen every upload made before the call)."""
    wait_until(lambda: submit_queue_in_use(stack, include_delayed) == 0, timeout, message="submit queue drained")


def settle_stack(stack: Any, sim: Any, timeout: float = 30.0) -> None:
    """Before a test that counts paid calls: let earlier tests' queued events and simulator tasks finish,
    then clear the simulator's faults and counters."""
    wait_for_queue_drained(stack, timeout, include_delayed=True)
    assert sim.wait_idle(timeout=timeout)
    sim.reset()


def wait_for_object(s3: Any, bucket: str, key: str, timeout: float = 10.0) -> bytes:
    """The object's body once it exists."""
    from botocore.exceptions import ClientError

    def body() -> bytes | None:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError:
            return None

    return wait_until(lambda: body(), timeout, message=f"s3://{bucket}/{key} exists")


def job_ids_in_table(table: Any) -> set[str]:
    """Every job id in the table (the provider-slot counter, whose key starts with '/', excluded)."""
    ids: set[str] = set()
    kwargs: dict[str, Any] = {"ProjectionExpression": "job_id", "ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        ids.update(item["job_id"] for item in page.get("Items", []) if not item["job_id"].startswith("/"))
        if "LastEvaluatedKey" not in page:
            return ids
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def wait_for_job(
    table: Any, job_id: str, statuses: tuple[str, ...] = FINAL_STATUSES, timeout: float = 20.0
) -> dict[str, Any]:
    """Like wait_for_status, but a half-written item is "not yet": moto's UpdateItem stores a key-only
    item before it applies the update, so a concurrent read can see an item with no `status`."""
    item: dict[str, Any] | None = None

    def reached() -> dict[str, Any] | None:
        nonlocal item
        item = get_job(table, job_id)
        return item if item and item.get("status") in statuses else None

    try:
        return wait_until(reached, timeout, message=f"job {job_id} in {statuses}")
    except AssertionError:
        raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s; last item: {item}") from None


# What handling an upload decided for its job (the submit function's "upload handled" line): any other
# outcome (waiting for the other file, a redelivery, deferred) decides nothing yet.
DECIDED_OUTCOMES = ("rejected", "submitted", "failed", "ambiguous", "held")


def wait_for_upload_outcome(caplog: Any, job_id: str, timeout: float = 20.0) -> str:
    """What the submit function decided for the job, as soon as one handling of its uploads decided
    it. Set `caplog.set_level("INFO", logger="vary-region")` before the upload."""

    def decided() -> str | None:
        return next(
            (
                str(record.outcome)
                for record in list(caplog.records)
                if record.getMessage() == "upload handled"
                and getattr(record, "job_id", None) == job_id
                and str(getattr(record, "outcome", "")) in DECIDED_OUTCOMES
            ),
            None,
        )

    return str(wait_until(decided, timeout, message=f"the submit function decided job {job_id}"))


@contextmanager
def not_raising(*errors: type[BaseException]) -> Iterator[None]:
    """The block must not raise any of `errors`: one that escapes fails the test's check, as an
    assertion would, instead of crashing the test (the mutation check counts only failed checks)."""
    try:
        yield
    except errors as exc:
        raise AssertionError(f"raised {type(exc).__name__}: {exc}") from exc


def _stored_image(s3: Any, bucket: str, key: str) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def assert_cut_from_the_grid(s3: Any, bucket: str, job_id: str) -> dict[str, Any]:
    """A completed job whose four images are its grid's quarters (a grid stage's one-URL result); its result.json."""
    folder = f"results/{job_id}/"
    result = read_json(s3, bucket, folder + "result.json")
    assert sorted(result["images"]) == ["1", "2", "3", "4", "grid"]
    assert result["variants_cut_from_grid"] is True
    grid = _stored_image(s3, bucket, folder + "grid.png").convert("RGB")
    width, height = grid.size
    boxes = [(0, 0, width // 2, height // 2), (width // 2, 0, width, height // 2)]
    boxes += [(0, height // 2, width // 2, height), (width // 2, height // 2, width, height)]
    for name, box in zip(("1", "2", "3", "4"), boxes, strict=True):
        variant = _stored_image(s3, bucket, folder + f"{name}.png")
        assert variant.size == (width // 2, height // 2) and min(variant.size) >= 256, (name, variant.size)
        assert variant.convert("RGB").tobytes() == grid.crop(box).tobytes(), f"variant {name} is its quarter"
        assert result["images"][name]["key"] == folder + f"{name}.png"
        assert result["images"][name]["source_url"] == result["images"]["grid"]["source_url"]
    distinct = {_stored_image(s3, bucket, folder + f"{name}.png").tobytes() for name in "1234"}
    assert len(distinct) == 4, "four different pictures, not one quarter four times"
    return result
