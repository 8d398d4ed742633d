"""Test data builders: masks, job files, uploads and waits, shared by every test module."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

from PIL import Image

FINAL_STATUSES = ("COMPLETED", "FAILED", "REJECTED")


def new_job_id(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mask_png(size: tuple[int, int] = (512, 512), box: tuple[int, int, int, int] | None = (128, 128, 320, 320),
             mode: str = "L") -> bytes:
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


def upload_job(s3: Any, bucket: str, job_id: str, *, spec: bytes | None = None, mask: bytes | None = None,
               mask_name: str = "mask.png", mask_first: bool = False, mask_content_type: str | None = None) -> None:
    spec = job_json() if spec is None else spec
    mask = mask_png() if mask is None else mask
    uploads = [(f"inbox/{job_id}/job.json", spec, "application/json"),
               (f"inbox/{job_id}/{mask_name}", mask, mask_content_type)]
    if mask_first:
        uploads.reverse()
    for key, body, content_type in uploads:
        extra = {"ContentType": content_type} if content_type else {}
        s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def get_job(table: Any, job_id: str) -> dict[str, Any] | None:
    return table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")


def wait_for_status(table: Any, job_id: str, statuses: tuple[str, ...] = FINAL_STATUSES,
                    timeout: float = 20.0) -> dict[str, Any]:
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


def keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))
