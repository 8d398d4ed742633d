"""Uploaded-object keys from the messages on the submit queue: S3 notifications and held jobs."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from vary_region.aws.submit_queue import held_job_key


def uploaded_keys(notification: Any) -> list[str]:
    """Decoded keys of the ObjectCreated records in an S3 notification; [] for anything else.

    S3 URL-encodes keys in notifications (space as '+'), sends an `s3:TestEvent` when a
    notification is configured, and its EventBridge form carries the key decoded.
    """
    if not isinstance(notification, dict):
        return []
    if notification.get("Event") == "s3:TestEvent":
        return []
    held = held_job_key(notification)
    if held is not None:  # a job that waited for a provider slot comes back
        return [held]
    if notification.get("detail-type") == "Object Created":
        key = notification.get("detail", {}).get("object", {}).get("key")
        return [key] if isinstance(key, str) else []
    if not isinstance(notification.get("Records"), list):
        return []
    keys = []
    for record in notification["Records"]:
        if not isinstance(record, dict) or not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        key = ((record.get("s3") or {}).get("object") or {}).get("key")
        if isinstance(key, str):
            keys.append(unquote_plus(key))
    return keys
