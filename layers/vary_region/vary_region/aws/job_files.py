"""The job's files in S3: reading what the user uploaded (never changing it) and writing
result.json / error.json next to the result images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from vary_region.core.keys import InboxObject, InboxObjectKind, job_prefix, parse_inbox_key


@dataclass(frozen=True)
class StoredObject:
    """An object read from the jobs bucket (its bytes only if it was small enough)."""

    key: str
    size: int
    content_type: str | None
    data: bytes | None = None  # None when the object was larger than the caller's limit


_MISSING = ("404", "NoSuchKey", "NotFound")


class JobFiles:
    def __init__(self, s3_client: Any, bucket: str, inbox_prefix: str = "inbox/") -> None:
        self._s3 = s3_client
        self._bucket = bucket
        self._inbox = inbox_prefix

    @property
    def bucket(self) -> str:
        return self._bucket

    def in_bucket(self, bucket: str) -> JobFiles:
        """The same client on another bucket: a mask read from one of MASK_SOURCES."""
        return self if bucket == self._bucket else JobFiles(self._s3, bucket, self._inbox)

    def list_job_folder(self, job_id: str) -> list[InboxObject]:
        """The job's files under inbox/<job-id>/ that the pipeline understands."""
        found: list[InboxObject] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=job_prefix(job_id, self._inbox)):
            for entry in page.get("Contents", []):
                obj = parse_inbox_key(entry["Key"], self._inbox)
                if obj is not None and obj.job_id == job_id:
                    found.append(obj)
        return found

    def read(self, key: str, max_bytes: int) -> StoredObject | None:
        """Read at most max_bytes; None if the object is gone. An oversized object comes back without data."""
        try:
            response = self._s3.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        size = int(response.get("ContentLength", 0))
        body = response["Body"]
        try:
            data = None if size > max_bytes else body.read(max_bytes + 1)
        finally:
            body.close()
        if data is not None and len(data) > max_bytes:
            data = None
        return StoredObject(key=key, size=size, content_type=response.get("ContentType"), data=data)

    def write_json(self, key: str, document: dict[str, Any]) -> None:
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8"),
            ContentType="application/json",
        )

    def write_new(self, key: str, data: bytes, content_type: str) -> bool:
        """Write the object only if the key is free (a conditional PUT); False when it exists."""
        try:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def write_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)

    def object_size(self, key: str) -> int | None:
        """None only when the object certainly does not exist; a refusal or an outage raises.

        Treating a 403 or a throttle as "missing" would rewrite documents that exist (and hide a
        policy mistake); S3 answers a missing key with 404 only to a caller allowed to list.
        """
        try:
            return int(self._s3.head_object(Bucket=self._bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise


def job_file_kinds(objects: list[InboxObject]) -> dict[InboxObjectKind, list[InboxObject]]:
    grouped: dict[InboxObjectKind, list[InboxObject]] = {kind: [] for kind in InboxObjectKind}
    for obj in objects:
        grouped[obj.kind].append(obj)
    return grouped
