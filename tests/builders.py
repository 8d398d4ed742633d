"""Test data builders: masks, job files, uploads and waits, shared by every test module."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image
from vary_region.provider.webhook_token import webhook_token

FINAL_STATUSES = ("COMPLETED", "FAILED", "REJECTED")


def new_job_id(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mask_png(
    size: tuple[int, int] = (512, 512), box: tuple[int, int, int, int] | None = (128, 128, 320, 320), mode: str = "L"
) -> bytes:
    """Provider rule: black background, white where the image is redrawn. box=None: all black."""
    image = Image.new(mode, size, 0)
    if box is not None:
        white = 255 if mode in ("L", "1", "P") else (255,) * len(mode)
        image.paste(white, box)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def mask_image(fmt: str, size: tuple[int, int] = (512, 512)) -> bytes:
    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 255, 255), (100, 100, 300, 300))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def job_json(parent_task_id: Any = "parent-task-1", prompt: Any = "a red balloon", **extra: Any) -> bytes:
    document: dict[str, Any] = {"parent_task_id": parent_task_id}
    if prompt is not None:
        document["prompt"] = prompt
    document.update(extra)
    return json.dumps(document).encode()


def upload_job(
    s3: Any,
    bucket: str,
    job_id: str,
    *,
    spec: bytes | None = None,
    mask: bytes | None = None,
    mask_name: str = "mask.png",
    mask_first: bool = False,
    mask_content_type: str | None = None,
) -> None:
    spec = job_json() if spec is None else spec
    mask = mask_png() if mask is None else mask
    uploads = [
        (f"inbox/{job_id}/job.json", spec, "application/json"),
        (f"inbox/{job_id}/{mask_name}", mask, mask_content_type),
    ]
    if mask_first:
        uploads.reverse()
    for key, body, content_type in uploads:
        extra = {"ContentType": content_type} if content_type else {}
        s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def get_job(table: Any, job_id: str) -> dict[str, Any] | None:
    return table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")


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


# ---- webhooks, reconciler and simulator helpers (integration tests of the webhook/reconcile paths) ----
IN_FLIGHT_STATUSES = ("SUBMITTED", "PROCESSING")
RESULT_IMAGE_NAMES = ("grid", "1", "2", "3", "4")


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


@contextmanager
def not_raising(*errors: type[BaseException]) -> Iterator[None]:
    """The block must not raise any of `errors`: one that escapes fails the test's check, as an
    assertion would, instead of crashing the test (the mutation check counts only failed checks)."""
    try:
        yield
    except errors as exc:
        raise AssertionError(f"raised {type(exc).__name__}: {exc}") from exc


def wait_for_sim_task(
    sim: Any, task_id: str, statuses: tuple[str, ...] = ("finished", "failed"), timeout: float = 20.0
) -> dict[str, Any]:
    """The simulator's task record once the task reached one of `statuses`."""
    return wait_until(
        lambda: (t := sim.task(task_id)) is not None and t["status"] in statuses and t,
        timeout,
        message=f"simulator task {task_id} in {statuses}",
    )


def progress_body(task_id: str, percentage: str, status: str = "processing") -> dict[str, Any]:
    """The documented in-progress shape: the percentage is a string."""
    return {"task_id": task_id, "task_type": "inpaint", "status": status, "percentage": percentage}


def post_webhook(
    stack: Any,
    job_id: str,
    payload: Any = None,
    *,
    secret: str | None = None,
    body: bytes | None = None,
    timeout: float = 60.0,
    stage: str = "inpaint",
) -> Any:
    """POST to the local webhook endpoint of `job_id` (and `stage`) as the provider would (secret
    header optional)."""

    import requests

    headers = {"Content-Type": "application/json"}
    url = f"{stack.info.webhook_url}/{webhook_token(job_id, stage)}"
    if stack.options.api_version == "v2":  # v2's words, signed with the key; the secret rides in the URL
        from vary_region_local.simulator_v2 import signature, v2_job

        data = (
            body if body is not None else json.dumps(v2_job(payload) if isinstance(payload, dict) else payload).encode()
        )
        headers["X-Webhook-Signature"] = signature(stack.options.api_key, data)
        url += f"~{secret}" if secret is not None else ""
        return requests.post(url, data=data, headers=headers, timeout=timeout)
    if secret is not None:
        headers["x-webhook-secret"] = secret
    data = body if body is not None else json.dumps(payload).encode()
    return requests.post(url, data=data, headers=headers, timeout=timeout)


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


def settle_job(stack: Any, sim: Any, table: Any, job: InFlightJob, timeout: float = 20.0) -> dict[str, Any]:
    """Finish an in-flight job the ordinary way (its real final webhook), so that it does not linger as
    open work for later reconciler runs. Faults on the image host must be off."""
    item = get_job(table, job.job_id)
    if item and item["status"] in FINAL_STATUSES:
        return item
    post_webhook(stack, job.job_id, final_body(sim, job.task_id), secret=job.secret)
    return wait_for_job(table, job.job_id, timeout=timeout)


def object_version(s3: Any, bucket: str, key: str) -> tuple[str, Any]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return head["ETag"], head["LastModified"]


def s3_put_event(bucket: str, key: str) -> dict[str, Any]:
    """An S3 ObjectCreated notification as S3 sends it (the key URL-encoded, `+` for spaces)."""
    import urllib.parse

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": urllib.parse.quote_plus(key), "size": 1},
                },
            }
        ]
    }


def create_simulator_task(sim: Any, api_key: str, prompt: str = "a lighthouse") -> dict[str, Any]:
    """A finished imagine task on the simulator (grid + 4 images), created without any webhook."""
    import requests

    if sim.api_version == "v2":
        url, headers = f"{sim.base_url}/v2/images/midjourney/generate", {"X-API-Key": api_key}
    else:
        url, headers = f"{sim.base_url}/imagine", {"Authorization": api_key}
    response = requests.post(url, json={"prompt": prompt}, headers=headers, timeout=10)
    response.raise_for_status()
    created = response.json()
    return wait_for_sim_task(sim, created.get("task_id") or created["jobId"], ("finished",))


def secret_of(record: dict[str, Any] | None) -> str | None:
    """The stage secret a stage request (or a simulator task) carries: v1's `webhook_secret`, or what
    v2's webhook URL holds after its "~"."""
    if not record:
        return None
    url = str(record.get("webhook_url") or "")
    return record.get("webhook_secret") or (url.rpartition("~")[2] if "~" in url else None)


def hook_of(request: dict[str, Any]) -> str:
    """The webhook URL a stage request names, without the stage's secret v2 carries after a "~"."""
    url = str(request.get("webhook_url") or "")
    return url.rpartition("~")[0] if "~" in url else url


# ---- intake, submit-error and duplicate-delivery helpers (queue-level sync points, raw events) ----
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


def put_files(s3: Any, bucket: str, files: list[tuple[str, bytes, str | None]]) -> dict[str, str]:
    """Upload (key, body, content type or None) in order; return each key's ETag as S3 answered it."""
    etags = {}
    for key, body, content_type in files:
        extra = {"ContentType": content_type} if content_type else {}
        etags[key] = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)["ETag"]
    return etags


def wait_for_object(s3: Any, bucket: str, key: str, timeout: float = 10.0) -> bytes:
    """The object's body once it exists."""
    from botocore.exceptions import ClientError

    def body() -> bytes | None:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError:
            return None

    return wait_until(lambda: body(), timeout, message=f"s3://{bucket}/{key} exists")


def s3_notification(bucket: str, key: str, size: int = 1) -> dict[str, Any]:
    """An ObjectCreated:Put notification exactly as moto (and S3) sends it to SQS: the key `quote_plus`-encoded."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2025-06-02T10:09:57.214Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "inbox",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key), "size": size, "eTag": "0"},
                },
            }
        ]
    }


def sqs_event_for(stack: Any, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The SQS event the submit function receives from its event source mapping, one record per body."""
    from vary_region_local.sqs_poller import sqs_event

    messages = [
        {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": uuid.uuid4().hex,
            "Body": json.dumps(body),
            "Attributes": {"ApproximateReceiveCount": "1"},
        }
        for body in bodies
    ]
    arn = f"arn:aws:sqs:{stack.options.region}:123456789012:vary-region-submit"
    return sqs_event(messages, arn, stack.options.region)


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


# ---- per-job accounting of provider calls and webhook answers (robust to other jobs in flight) ----
class ProviderRecorder:
    """Records every request that reaches the simulator (method, path, the task ids or webhook URL it
    names, and the status it got), so a test can count its own job's calls while other jobs run.
    Install with `ProviderRecorder.install(sim, monkeypatch)`."""

    def __init__(self) -> None:
        import threading

        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def install(cls, sim: Any, monkeypatch: Any) -> ProviderRecorder:
        recorder = cls()
        original = sim._handle

        def handle(method: str, raw_path: str, authorization: str | None, body: bytes, api_key: Any = None) -> Any:
            status = 500
            try:
                response = original(method, raw_path, authorization, body, api_key)
                status = response.status
                return response
            except Exception as exc:  # the simulator answers its own _BadRequest with a 400
                status = 400 if type(exc).__name__ == "_BadRequest" else 500
                raise
            finally:
                recorder._record(method, raw_path, body, status)

        monkeypatch.setattr(sim, "_handle", handle)
        return recorder

    def _record(self, method: str, raw_path: str, body: bytes, status: int) -> None:
        import urllib.parse

        path = urllib.parse.urlsplit(raw_path).path
        if path.startswith("/v2/"):  # recorded as the v1 call it stands for, so tests count either alike
            from vary_region_local.simulator_v2 import v2_request

            method, path, body = v2_request(method, path, body) or (method, path, body)
        call: dict[str, Any] = {"method": method, "path": path, "status": status, "task_ids": (), "webhook_url": None}
        if method == "POST" and path in ("/fetch", "/fetch-many", "/inpaint", "/imagine", "/upscale-1x"):
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                payload = {}
            if isinstance(payload, dict):
                ids = payload.get("task_ids") if path == "/fetch-many" else [payload.get("task_id")]
                call["task_ids"] = tuple(i for i in ids or () if isinstance(i, str))
                url = payload.get("webhook_url")
                # v2 carries the stage's secret after a "~" (never in a token): the URL is what precedes it.
                call["webhook_url"] = url.rpartition("~")[0] if isinstance(url, str) and "~" in url else url
        with self._lock:
            self.calls.append(call)

    def _snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.calls)

    def fetches(self, task_id: str) -> int:
        """Fetch calls (single or batched) that asked about this task."""
        return sum(1 for c in self._snapshot() if c["path"] in ("/fetch", "/fetch-many") and task_id in c["task_ids"])

    def image_gets(self, task_id: str) -> int:
        import urllib.parse

        prefix = f"/images/{urllib.parse.quote(task_id, safe='')}/"
        return sum(1 for c in self._snapshot() if c["method"] == "GET" and c["path"].startswith(prefix))

    def inpaint_calls(self, job_id: str, status: int | None = None) -> int:
        """/inpaint requests made for this job (recognised by its webhook URL); status=200: paid ones."""
        return self.stage_calls(job_id, "inpaint", status)

    def stage_calls(self, job_id: str, stage: str, status: int | None = None) -> int:
        """Requests for one stage of this job (/imagine, /upscale-1x or /inpaint, recognised by the
        stage's webhook URL); status=200: paid ones."""
        path = {"imagine": "/imagine", "upscale": "/upscale-1x", "inpaint": "/inpaint"}[stage]
        suffix = "/" + webhook_token(job_id, stage)
        return sum(
            1
            for c in self._snapshot()
            if c["path"] == path
            and str(c["webhook_url"]).endswith(suffix)
            and (status is None or c["status"] == status)
        )

    def side_effects(self, *task_ids: str) -> tuple[int, int]:
        """(Fetch calls, image downloads) concerning these tasks."""
        return sum(self.fetches(t) for t in task_ids), sum(self.image_gets(t) for t in task_ids)


class WebhookRecorder:
    """Wraps the local webhook function and records each invocation's job path and HTTP status (what
    API Gateway's access log would show). Install with `WebhookRecorder.install(stack, monkeypatch)`."""

    def __init__(self, function: Any) -> None:
        import threading

        self._function = function
        self._lock = threading.Lock()
        self.answers: list[tuple[str, int]] = []

    @classmethod
    def install(cls, stack: Any, monkeypatch: Any) -> WebhookRecorder:
        recorder = cls(stack.functions["webhook"])
        monkeypatch.setitem(stack.functions, "webhook", recorder)
        return recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._function, name)

    def invoke(self, event: dict[str, Any]) -> Any:
        status = 500
        try:
            response = self._function.invoke(event)
            status = int(response.get("statusCode", 200)) if isinstance(response, dict) else 200
            return response
        finally:
            with self._lock:
                self.answers.append((event.get("rawPath", ""), status))

    def statuses(self, job_id: str) -> list[int]:

        path = "/webhook/" + webhook_token(job_id)
        with self._lock:  # under v2 the path goes on with "~" and the stage's secret
            return [status for raw_path, status in self.answers if raw_path.partition("~")[0] == path]


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
