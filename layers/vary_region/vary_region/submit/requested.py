"""A job requested by an event: a `Vary Region Job Requested` event that a rule put on the submit
queue (the whole event), or the same body sent to the queue as a plain message.

Its detail is a job file plus `job_id` (the caller's idempotency key). The submit function writes it,
unchanged, as the job's inline file `inbox/<job_id>.json` (only if no such file exists) and handles
that upload: from there it is a job like any other, with the same checks, the same error records and
the same one paid submission, and its file stays in the inbox for the record.

A body that is not strict JSON (NaN or Infinity in it, nesting past strict_json.MAX_DEPTH) is never
written: a request still readable enough to name its job is REJECTED `SPEC_INVALID_JSON` at once
(JobSubmitter.refuse_request), any other is refused like a request without a job id.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from vary_region.aws.submit_queue import HELD_JOB_FIELD
from vary_region.core.event_types import JOB_REQUESTED


class RequestedJob(NamedTuple):
    job_id: str
    document: dict[str, Any]

    def job_file(self) -> bytes:
        """The inline job file: the request's detail as the caller sent it, `job_id` left out."""
        body = {name: value for name, value in self.document.items() if name != "job_id"}
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")


class JobRequestInvalid(ValueError):
    """A request without a usable `job_id`: no job can be named, so nothing is recorded for it."""


def requested_job(message: Any) -> RequestedJob | None:
    """The job a queue message asks for, or None when the message is no job request (an S3
    notification, a held job's wake-up). Raises JobRequestInvalid when it is one without a job id."""
    if not isinstance(message, dict) or "Records" in message or HELD_JOB_FIELD in message:
        return None
    if "detail-type" in message:
        if message.get("detail-type") != JOB_REQUESTED:
            return None
        detail = message.get("detail")
    elif "job_id" in message:
        detail = message
    else:
        return None
    if not isinstance(detail, dict):
        raise JobRequestInvalid("the job request's detail must be a JSON object (a job file plus job_id)")
    job_id = detail.get("job_id")
    if not isinstance(job_id, str) or not job_id.strip():
        raise JobRequestInvalid("the job request has no `job_id` (the caller's idempotency key)")
    return RequestedJob(job_id, detail)
