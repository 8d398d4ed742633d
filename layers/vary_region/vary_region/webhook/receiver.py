"""A provider webhook, from raw request to job update: authenticate first, then parse, then record.

Progress is recorded here. A final report (finished or failed) is only a signal: it is noted on the
job and handed to the completion worker, which re-reads the task from Fetch before anything is
copied. So the webhook answers in a few DynamoDB and SQS calls, whatever the images weigh.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import unquote

from vary_region.aws.completion_queue import CompletionQueue, CompletionRequest
from vary_region.core.job import Job, utc_now
from vary_region.core.keys import is_valid_job_id
from vary_region.core.stages import JobStage
from vary_region.observability import logger
from vary_region.provider.port import ProviderWebhooks
from vary_region.provider.task_result import MalformedTaskPayload, TaskState
from vary_region.provider.webhook_auth import SharedSecretVerifier
from vary_region.provider.webhook_token import parse_webhook_token, split_url_secret
from vary_region.store.job_table import JobTable

MAX_WEBHOOK_BYTES = 64 * 1024


class WebhookUnauthorized(Exception):
    """Unknown job or task, or a missing/wrong secret. Deliberately one error: nothing is revealed."""


class WebhookMalformed(Exception):
    """Authenticated, but the body is not a task payload."""


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook request as it arrived: the job id from its URL path, its headers and raw body.

    The id is the path segment as the HTTP front handed it over: API Gateway HTTP APIs are reported
    to decode it, other fronts (the local stack, a proxy) pass it still percent-encoded.
    """

    path_job_id: str
    headers: Mapping[str, str]
    body: bytes


class WebhookOutcome(StrEnum):
    PROGRESS = "progress"
    QUEUED = "queued"  # a final report, handed to the completion worker
    UNCHANGED = "unchanged"  # stale, repeated, or for a finished job


class WebhookReceiver:
    def __init__(
        self,
        store: JobTable,
        queue: CompletionQueue,
        webhooks: ProviderWebhooks | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._queue = queue
        self._webhooks = webhooks or SharedSecretVerifier()
        self._clock = clock

    def receive(self, delivery: WebhookDelivery) -> WebhookOutcome:
        job, stage = self._authenticated_job(delivery)
        if len(delivery.body) > MAX_WEBHOOK_BYTES:
            raise WebhookMalformed(f"the body is larger than {MAX_WEBHOOK_BYTES} bytes")
        try:
            update = self._webhooks.parse(json.loads(delivery.body))
        except (ValueError, MalformedTaskPayload) as exc:
            raise WebhookMalformed(f"the body is not a task payload: {exc}") from None
        known_task = job.task_id_of(stage)
        if known_task and update.task_id != known_task:
            # The right secret for this job with another task id: treat it as forged.
            raise WebhookUnauthorized("task id does not match the job")
        logger.append_keys(task_id=update.task_id, stage=str(stage))
        if job.status.is_final or stage is not job.stage:
            return WebhookOutcome.UNCHANGED  # a finished job, or a stage the job has already left
        if update.state is TaskState.RUNNING:
            changed = self._store.record_progress(
                job.job_id, update.task_id, update.percentage, self._clock(), stage=stage
            )
            return WebhookOutcome.PROGRESS if changed else WebhookOutcome.UNCHANGED
        if not self._store.record_final_signal(job.job_id, update.task_id, self._clock(), stage):
            return WebhookOutcome.UNCHANGED  # finished meanwhile, moved on, or the stage has another task
        self._queue.request(CompletionRequest(job.job_id, update.task_id))
        return WebhookOutcome.QUEUED

    def _authenticated_job(self, delivery: WebhookDelivery) -> tuple[Job, JobStage]:
        """The job (and stage) the URL names whose secret the delivery carries; WebhookUnauthorized
        otherwise. Each stage of a chain has its own secret and its own URL."""
        found = False
        segment, url_secret = split_url_secret(delivery.path_job_id)
        for job_id, stage in _candidate_job_ids(segment):
            job = self._store.get(job_id)
            if job is None:
                continue
            found = True
            secret_hash = job.stage_secret_hashes.get(stage) if job.was_submitted else None
            if secret_hash and self._webhooks.verify(delivery.headers, delivery.body, url_secret, secret_hash):
                logger.append_keys(job_id=job.job_id)
                return job, stage
        # As it arrived, its URL secret cut off (never logged): decoding could name another job.
        logger.append_keys(path_job_id=segment)
        raise WebhookUnauthorized("wrong or missing secret" if found else "unknown job")


def _candidate_job_ids(path_segment: str) -> list[tuple[str, JobStage]]:
    """The (job id, stage) pairs a URL's last segment may name, most likely first.

    Webhook URLs carry an opaque token (webhook_token). URLs made before tokens carried the job id
    percent-encoded, and a front may hand it over decoded or not: as delivered, then decoded, since
    an id may itself contain '%' ("a%41" is a job of its own, not "aA"). Each candidate must still
    match the delivery's secret, so a second reading of the same URL never lets a webhook in.
    """
    candidates: dict[tuple[str, JobStage], None] = {}
    from_token = parse_webhook_token(path_segment)
    if from_token is not None and from_token[1] in set(JobStage):
        candidates[(from_token[0], JobStage(from_token[1]))] = None
    for job_id in (path_segment, unquote(path_segment)):  # URLs made before tokens: plain inpaint jobs
        candidates[(job_id, JobStage.INPAINT)] = None
    # Not a job id at all (too long, control characters): no read, and no DynamoDB key error.
    return [candidate for candidate in candidates if is_valid_job_id(candidate[0])]
