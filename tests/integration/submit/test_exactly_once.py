"""At most one paid submission per job, by construction: each guard of the claim is proved on its own,
deterministically, against a real (moto server) DynamoDB table, and the submitter keeps a claim whenever
the request may have been sent.

The store-level tests use a table of their own, made from template.yaml's definition, so its provider
slot counter moves only with what the test does. The submitter-level tests drive a JobSubmitter whose
inbox is a prefix the stack's S3 notifications ignore: each "delivery" is a call the test makes, in
order, and no queue poller races it. The simulator, the jobs table and the webhook path are the stack's.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from vary_region.aws.job_files import JobFiles
from vary_region.core.errors import ErrorStage, JobError, RequestNotSent
from vary_region.core.stages import JobStage
from vary_region.provider.api_key import api_key_reader
from vary_region.provider.apiframe_v1 import ApiframeClient, InpaintRequest, RetryPolicy
from vary_region.settings import Settings, get_settings
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.submit.submitter import JobSubmitter, SubmitOutcome
from vary_region.wiring import parent_reader, provider_slot_limit

from tests.support.builders import job_json, mask_png, new_job_id, put_files, secret_of
from tests.support.faults import hold_provider_tasks
from tests.support.recorders import ProviderRecorder
from tests.support.waits import get_job, job_item, not_raising, settle_stack, wait_for_job

DIRECT_INBOX = "direct-inbox/"  # not under the stack's notification prefix (inbox/)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


# ---- the claim's guards, one at a time, on a table of the test's own ----------------------------


def _received(store: JobTable) -> str:
    job_id = new_job_id("claim")
    assert store.record_received(job_id, NOW)
    return job_id


def _claim(store: JobTable, job_id: str, token: str, secret_hash: str = "hash-1", parent: str = "parent-1") -> bool:
    return store.claim_submission(job_id, token, secret_hash, parent, "a prompt", {"n": 1}, NOW)


def _claim_fields(table: Any, job_id: str) -> dict[str, Any]:
    item = job_item(table, job_id)
    fields = ("status", "submit_claim", "submit_claimed_at", "webhook_secret_hash", "parent_task_id", "task_id")
    return {name: item.get(name) for name in fields}


def test_a_second_claim_on_a_claimed_job_loses_and_changes_nothing(store, own_table):
    job_id = _received(store)
    assert _claim(store, job_id, "token-1", "hash-1", "parent-1")
    first, slots = _claim_fields(own_table, job_id), store.slots_in_use()

    # Another delivery of the same job: another token, another secret, even other inputs.
    assert not _claim(store, job_id, "token-2", "hash-2", "parent-2")

    assert _claim_fields(own_table, job_id) == first
    assert first["submit_claim"] == "token-1" and first["webhook_secret_hash"] == "hash-1"
    assert store.slots_in_use() == slots, "a lost claim takes no provider slot"


def test_a_claim_given_back_can_be_won_again(store, own_table):
    job_id = _received(store)
    slots = store.slots_in_use()
    assert _claim(store, job_id, "token-1")
    assert store.release_claim(job_id, "token-1", NOW)
    assert store.slots_in_use() == slots

    assert _claim(store, job_id, "token-2", "hash-2")
    assert _claim_fields(own_table, job_id)["submit_claim"] == "token-2"
    assert store.slots_in_use() == slots + 1


def _rejected(store: JobTable) -> str:
    job_id = _received(store)
    assert store.mark_rejected(job_id, JobError("MASK_BLANK", "all black", ErrorStage.INTAKE), NOW)
    return job_id


def _failed(store: JobTable) -> str:
    job_id = _received(store)
    assert _claim(store, job_id, "token-1")
    assert store.mark_failed(
        job_id,
        JobError("PROVIDER_REJECTED", "no", ErrorStage.SUBMIT),
        NOW,
        JudgedStage(JobStage.INPAINT, claim="token-1"),
    )
    return job_id


def _completed(store: JobTable) -> str:
    job_id = _received(store)
    assert _claim(store, job_id, "token-1")
    assert store.mark_submitted(job_id, "token-1", "task-1", NOW)
    assert store.mark_completed(job_id, "task-1", {"grid": "results/x/grid.png"}, NOW)
    return job_id


@pytest.mark.parametrize("finished", [_rejected, _failed, _completed], ids=["rejected", "failed", "completed"])
def test_a_claim_on_a_finished_job_loses(store, own_table, finished):
    # A rejected job never held a claim: only the status condition stops a late delivery paying for it.
    job_id = finished(store)
    before, slots = get_job(own_table, job_id), store.slots_in_use()

    assert not _claim(store, job_id, "late-token", "hash-late")

    assert get_job(own_table, job_id) == before
    assert store.slots_in_use() == slots


def test_release_with_another_token_does_nothing(store, own_table):
    job_id = _received(store)
    assert _claim(store, job_id, "token-1")
    claimed, slots = _claim_fields(own_table, job_id), store.slots_in_use()

    assert not store.release_claim(job_id, "token-2", NOW)

    assert _claim_fields(own_table, job_id) == claimed
    assert store.slots_in_use() == slots
    assert not _claim(store, job_id, "token-3"), "the job is still claimed by its first delivery"


def test_a_job_whose_task_id_is_recorded_can_never_be_released(store, own_table):
    job_id = _received(store)
    assert _claim(store, job_id, "token-1")
    assert store.mark_submitted(job_id, "token-1", "task-1", NOW)
    submitted, slots = _claim_fields(own_table, job_id), store.slots_in_use()

    assert not store.release_claim(job_id, "token-1", NOW), "even by the delivery that made the claim"

    assert _claim_fields(own_table, job_id) == submitted
    assert store.slots_in_use() == slots
    assert not _claim(store, job_id, "token-2")


def test_a_job_whose_task_id_a_webhook_recorded_can_never_be_released(store, own_table):
    job_id = _received(store)
    assert _claim(store, job_id, "token-1")
    # The task's first webhook outran the submitter's own write of the task id.
    assert store.record_progress(job_id, "task-1", 25, NOW, stage=JobStage.INPAINT)

    assert not store.release_claim(job_id, "token-1", NOW)
    assert _claim_fields(own_table, job_id)["task_id"] == "task-1"


# ---- the submitter: handled again and again, one /inpaint -----------------------------------------


@pytest.fixture()
def settings(stack: Any, sim: Any) -> Settings:
    settle_stack(stack, sim)  # the provider slot this test's job takes must be free
    return replace(get_settings(), inbox_prefix=DIRECT_INBOX)


def _submitter(settings: Settings, apiframe: Any) -> JobSubmitter:
    table = boto3.resource("dynamodb").Table(settings.jobs_table)
    files = JobFiles(boto3.client("s3"), settings.jobs_bucket, DIRECT_INBOX)
    store = JobTable(table, ttl_days=settings.job_ttl_days, max_active_tasks=provider_slot_limit(settings))
    return JobSubmitter(settings, store, files, apiframe, parent_reader(settings))


def _client(settings: Settings, api_key: Any = None) -> ApiframeClient:
    from vary_region.provider.apiframe_v2 import ApiframeV2Client

    client_type = ApiframeV2Client if settings.apiframe_api_version == "v2" else ApiframeClient
    return client_type(
        settings.apiframe_base_url,
        api_key or api_key_reader(settings),
        read_timeout=settings.apiframe_read_timeout,
        retry=RetryPolicy(budget_seconds=settings.submit_retry_budget_seconds),
    )


def _upload(s3: Any, bucket: str, job_id: str) -> list[str]:
    keys = [f"{DIRECT_INBOX}{job_id}/job.json", f"{DIRECT_INBOX}{job_id}/mask.png"]
    put_files(s3, bucket, [(keys[0], job_json(), "application/json"), (keys[1], mask_png(), "image/png")])
    return keys


def test_the_same_upload_handled_again_and_again_makes_one_inpaint_call(settings, sim, s3, table, bucket, monkeypatch):
    provider = ProviderRecorder.install(sim, monkeypatch)
    submitter = _submitter(settings, _client(settings))
    job_id = new_job_id("twice")
    keys = _upload(s3, bucket, job_id)

    first = submitter.handle_upload(keys[0])
    again = [submitter.handle_upload(key) for key in (keys[0], keys[1], keys[0])]

    assert first.outcome is SubmitOutcome.SUBMITTED and first.task_id
    assert [result.outcome for result in again] == [SubmitOutcome.ALREADY_HANDLED] * 3
    assert provider.inpaint_calls(job_id) == 1
    assert wait_for_job(table, job_id)["status"] == "COMPLETED"
    assert provider.inpaint_calls(job_id) == 1


class SentThenCrashed:
    """A client that really sends the request (the provider creates, and charges, the task) and then
    fails in a way no one planned for: a bug while handling the answer."""

    def __init__(self, real: ApiframeClient) -> None:
        self.real = real
        self.sent: list[str] = []

    def submit(self, request: InpaintRequest, idempotency_key: str | None = None) -> str:
        self.sent.append(self.real.submit(request, idempotency_key))
        raise RuntimeError("bug after the request was sent")


class FormattedLogLines(logging.Handler):
    """The service's log lines as Powertools writes them (JSON, traceback included)."""

    def __init__(self) -> None:
        super().__init__()
        service = logging.getLogger("vary-region")
        self._powertools = next(h for h in service.handlers if h.formatter is not None)
        self.lines: list[tuple[logging.LogRecord, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record, self._powertools.format(record)))


@pytest.fixture()
def log_lines() -> Iterator[FormattedLogLines]:
    collector = FormattedLogLines()
    logging.getLogger("vary-region").addHandler(collector)
    try:
        yield collector
    finally:
        logging.getLogger("vary-region").removeHandler(collector)


def test_an_unexpected_error_after_sending_is_ambiguous_keeps_the_claim_and_is_never_resent(
    settings, sim, s3, table, bucket, monkeypatch, log_lines
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    client = SentThenCrashed(_client(settings))
    submitter = _submitter(settings, client)
    job_id = new_job_id("crash-after-send")
    keys = _upload(s3, bucket, job_id)
    # The task's webhooks wait until the ambiguous state has been checked; then they rescue the job.
    release = hold_provider_tasks(sim, monkeypatch)
    try:
        with not_raising(RuntimeError):  # the bug is the submitter's to contain, not to pass on
            result = submitter.handle_upload(keys[1])

        assert result.outcome is SubmitOutcome.AMBIGUOUS
        item = job_item(table, job_id)
        assert item["status"] == "SUBMITTED", item
        assert item["needs_attention"] is True
        assert item["error"]["code"] == "SUBMIT_AMBIGUOUS" and "RuntimeError" in item["error"]["message"]
        assert item.get("submit_claim") and "task_id" not in item
        redelivered = [submitter.handle_upload(key) for key in (keys[1], keys[0], keys[1])]
        assert [r.outcome for r in redelivered] == [SubmitOutcome.ALREADY_HANDLED] * 3
        assert provider.inpaint_calls(job_id) == 1 and len(client.sent) == 1
        logged = [text for record, text in log_lines.lines if record.exc_info and record.levelno == logging.ERROR]
        assert len(logged) == 1 and "RuntimeError" in logged[0], "logged once, with its traceback"
        secret = secret_of(sim.task(client.sent[0]))
        mask_base64 = base64.b64encode(mask_png()).decode()
        assert all(secret not in text and mask_base64[:40] not in text for _, text in log_lines.lines)
    finally:
        release.set()

    item = wait_for_job(table, job_id)
    assert item["status"] == "COMPLETED", item
    assert item["task_id"] == client.sent[0]
    assert provider.inpaint_calls(job_id) == 1


def test_an_api_key_read_failure_gives_the_claim_back_and_the_redelivery_submits_once(
    settings, sim, s3, table, bucket, monkeypatch
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    real_key = api_key_reader(settings)
    failures = [ConnectionError("Secrets Manager unreachable")]

    def key_failing_once() -> str:
        if failures:
            raise failures.pop()
        return real_key()

    submitter = _submitter(settings, _client(settings, key_failing_once))
    job_id = new_job_id("key-unreadable")
    keys = _upload(s3, bucket, job_id)

    with pytest.raises(RequestNotSent):
        submitter.handle_upload(keys[1])

    item = job_item(table, job_id)
    assert item["status"] == "RECEIVED" and "submit_claim" not in item, "nothing was sent: the claim is back"
    assert provider.inpaint_calls(job_id) == 0

    redelivered = submitter.handle_upload(keys[1])

    assert redelivered.outcome is SubmitOutcome.SUBMITTED
    assert wait_for_job(table, job_id)["status"] == "COMPLETED"
    assert provider.inpaint_calls(job_id) == 1
