"""A job requested by an event: a `Vary Region Job Requested` event that a rule put on the submit
queue (the whole event), or the same body sent to the queue as a plain message.

Its detail is a job file plus `job_id` (the caller's idempotency key). The submit function writes it,
unchanged, as the job's inline file `inbox/<job_id>.json` (only if no such file exists) and handles
that upload: from there it is a job like any other, with the same checks, the same error records and
the same one paid submission, and its file stays in the inbox for the record.

A body that is not strict JSON (NaN or Infinity in it, nesting past strict_json.MAX_DEPTH) is never
written: a request still readable enough to name its job is REJECTED `SPEC_INVALID_JSON` at once
(JobRequests.refuse), any other is refused like a request without a job id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from vary_region.aws.job_files import JobFiles
from vary_region.aws.submit_queue import HELD_JOB_FIELD
from vary_region.core.errors import ErrorStage, JobError, JobRejected
from vary_region.core.event_types import JOB_REQUESTED
from vary_region.core.keys import InboxObjectKind, ResultKeys, parse_inbox_key
from vary_region.endings import ensure_error_document
from vary_region.observability import logger
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable
from vary_region.submit.outcome import SubmitOutcome, SubmitResult
from vary_region.submit.task_token import read_task_token


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


class JobRequests:
    """Requested jobs into the inbox: from there each is an upload like any other."""

    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        files: JobFiles,
        clock: Callable[[], datetime],
        reject: Callable[[str, JobError], SubmitResult],
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._clock = clock
        self._reject = reject

    def accept(self, requested: RequestedJob) -> bool:
        """A job requested by an event: its file is written once as inbox/<job_id>.json (never over an
        existing one), and from there it is an upload like any other: that upload's notification
        starts it. False: the file was there already (a redelivery, or the id was taken)."""
        key = self._request_key(requested)
        written = self._files.write_new(key, requested.job_file(), "application/json")
        if not written:
            logger.info("the requested job's file exists already: a redelivery, nothing to do", extra={"key": key})
        return written

    def refuse(self, requested: RequestedJob, reason: str) -> SubmitResult:
        """A requested job whose body is not strict JSON (NaN, Infinity): no file of it can be written,
        so it is REJECTED here, as its file would be, while its id names no other job. JobRequestInvalid
        when the id cannot be its own."""
        key = self._request_key(requested)
        job_id = requested.job_id
        logger.append_keys(job_id=job_id)
        existing = self._store.get(job_id)
        if existing is not None and existing.status.is_final:  # a redelivery, or a finished job's id: no change
            ensure_error_document(self._files, ResultKeys(job_id, self._settings.results_prefix), existing)
            return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)
        if existing is not None or self._files.object_size(key) is not None:
            raise JobRequestInvalid(f"the job id {job_id!r} belongs to another job, and this request is not valid JSON")
        first_seen = self._store.record_received(job_id, self._clock())
        if not first_seen:
            raise JobRequestInvalid(f"the job id {job_id!r} was taken meanwhile, and this request is not valid JSON")
        self._keep_token(job_id, requested.document)
        error = JobError("SPEC_INVALID_JSON", f"the requested job is not valid JSON ({reason})", ErrorStage.INTAKE)
        return replace(self._reject(job_id, error), first_seen=True)

    def _keep_token(self, job_id: str, document: dict[str, Any]) -> None:
        """A workflow waiting on a request that is not strict JSON learns of its refusal too, when this
        stack may answer it (task_token.py); a token that cannot be one, or none, changes nothing."""
        try:
            token = read_task_token(document)
        except JobRejected:
            return  # the request is refused for its JSON already
        if token is not None and self._settings.caller_state_machine_arns:
            self._store.set_task_token(job_id, token)

    def _request_key(self, requested: RequestedJob) -> str:
        """inbox/<job_id>.json, where a requested job's file is written; JobRequestInvalid when the id
        cannot name a job, or names a job folder's."""
        key = f"{self._settings.inbox_prefix}{requested.job_id}.json"
        uploaded = parse_inbox_key(key, self._settings.inbox_prefix)
        if uploaded is None or uploaded.kind is not InboxObjectKind.INLINE or uploaded.job_id != requested.job_id:
            raise JobRequestInvalid(f"the job id {requested.job_id[:200]!r} cannot name a job (see the job id rules)")
        if self._files.list_job_folder(requested.job_id):
            raise JobRequestInvalid(f"the job id {requested.job_id!r} belongs to a job folder in the inbox already")
        return key
