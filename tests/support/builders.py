"""What tests send: masks, job files and uploads, webhook bodies, S3 and SQS notifications, simulator
tasks, and the stage secret a request carries."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from PIL import Image
from vary_region.provider.webhook_token import webhook_token

from tests.support.waits import wait_for_sim_task


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


RESULT_IMAGE_NAMES = ("grid", "1", "2", "3", "4")


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
        url, headers = f"{sim.base_url}/v2/images/generate", {"X-API-Key": api_key}
        body = {"prompt": prompt, "model": "midjourney"}
    else:
        url, headers, body = f"{sim.base_url}/imagine", {"Authorization": api_key}, {"prompt": prompt}
    response = requests.post(url, json=body, headers=headers, timeout=10)
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


def put_files(s3: Any, bucket: str, files: list[tuple[str, bytes, str | None]]) -> dict[str, str]:
    """Upload (key, body, content type or None) in order; return each key's ETag as S3 answered it."""
    etags = {}
    for key, body, content_type in files:
        extra = {"ContentType": content_type} if content_type else {}
        etags[key] = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)["ETag"]
    return etags


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
