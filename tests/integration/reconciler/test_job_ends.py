"""Every job ends: a hold and a chain's wait between stages have a maximum age (MAX_HOLD_SECONDS), a
parent that finished without an image is refused at once, a held job that loses a file is no longer
held (so the stale-receipt rule ends it), and a changed job file never strands a chain: the job's
state, not the file, says which claim comes next and which prompt a later stage sends.

The reconciler is the deployed one's parts with a clock of the test's own (test_housekeeping's
pattern); the submitter is driven directly on an inbox prefix the stack's notifications ignore."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from vary_region.aws.job_files import JobFiles
from vary_region.core.credits import reserve
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.stages import JobStage, stages_from
from vary_region.reconciler.reconciler import Reconciler
from vary_region.settings import Settings, get_settings
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.store.schema import SLOTS_KEY
from vary_region.submit.submitter import JobSubmitter, SubmitOutcome
from vary_region.wiring import apiframe_client, job_endings, parent_reader, provider_slot_limit

from tests.support.builders import job_json, mask_png, new_job_id, put_files
from tests.support.recorders import HoldRecorder
from tests.support.waits import job_item, keys_under, read_error_json, settle_stack, wait_until

DIRECT_INBOX = "ends-inbox/"  # not under the stack's notification prefix (inbox/)
STAGES = ("imagine", "upscale", "inpaint")


def reconciler_at(stack: Any, moment: datetime, **overrides: Any) -> tuple[Reconciler, JobTable, list[str]]:
    """The deployed reconciler's parts, with a clock set to `moment`; its hand-ons are recorded."""
    module = stack.functions["reconciler"].module
    settings = replace(module.settings, **overrides)
    store = JobTable(boto3.resource("dynamodb").Table(settings.jobs_table), max_active_tasks=1000)
    live = module.reconciler
    woken: list[str] = []
    ends = job_endings(settings, store, JobFiles(boto3.client("s3"), settings.jobs_bucket), clock=lambda: moment)
    reconciler = Reconciler(settings, store, ends, live._apiframe, live._queue, clock=lambda: moment, wake=woken.append)
    return reconciler, store, woken


@pytest.fixture()
def settings(stack: Any, sim: Any) -> Settings:
    settle_stack(stack, sim)
    return replace(get_settings(), inbox_prefix=DIRECT_INBOX)


def submitter_for(settings: Settings, holds: HoldRecorder, max_active_tasks: int | None = None) -> JobSubmitter:
    table = boto3.resource("dynamodb").Table(settings.jobs_table)
    limit = provider_slot_limit(settings) if max_active_tasks is None else max_active_tasks
    store = JobTable(table, ttl_days=settings.job_ttl_days, max_active_tasks=limit, budget=settings.budget_policy)
    files = JobFiles(boto3.client("s3"), settings.jobs_bucket, DIRECT_INBOX)
    return JobSubmitter(settings, store, files, apiframe_client(settings), parent_reader(settings), hold=holds)


def upload(s3: Any, bucket: str, job_id: str, spec: bytes | None = None, mask: bool = True) -> str:
    key = f"{DIRECT_INBOX}{job_id}/job.json"
    if mask:
        put_files(s3, bucket, [(f"{DIRECT_INBOX}{job_id}/mask.png", mask_png(), "image/png")])
    put_files(s3, bucket, [(key, spec or job_json(), "application/json")])
    return key


def upload_inline(s3: Any, bucket: str, job_id: str, document: dict[str, Any]) -> str:
    key = f"{DIRECT_INBOX}{job_id}.json"
    put_files(s3, bucket, [(key, json.dumps(document).encode(), "application/json")])
    return key


def chain_job(prompt: str = "a red balloon", **extra: Any) -> dict[str, Any]:
    return {
        "imagine": {"prompt": "a lighthouse at dusk", "index": "2", "aspect_ratio": "1:1"},
        "prompt": prompt,
        "mask": {"regions": [{"rect": [0.25, 0.25, 0.5, 0.5]}], "units": "fraction"},
    } | extra


# ---- a hold has a maximum age -------------------------------------------------------------------


def test_a_job_held_longer_than_the_limit_is_rejected_and_one_held_less_is_not(stack, sim, s3, table, bucket):
    now = datetime.now(UTC)
    reconciler, store, _ = reconciler_at(stack, now, max_hold_seconds=3600)
    old, young = new_job_id("held-long"), new_job_id("held-short")
    for job_id, since in ((old, now - timedelta(hours=2)), (young, now - timedelta(minutes=50))):
        store.record_received(job_id, since)
        store.mark_held(job_id, since, "PARENT_RUNNING")

    reconciler.run()

    ended = job_item(table, old)
    assert (ended["status"], ended.get("error", {}).get("code")) == ("REJECTED", "HELD_TOO_LONG")
    assert "PARENT_RUNNING" in ended["error"]["message"]
    assert read_error_json(s3, bucket, old)["error"]["code"] == "HELD_TOO_LONG"
    assert job_item(table, young)["status"] == "RECEIVED", "held for less than the limit: it still waits"
    store.mark_rejected(young, JobError("TEST_CLEANUP", "test", ErrorStage.INTAKE), now)


def test_a_chain_waiting_between_stages_longer_than_the_limit_fails_and_gives_back_its_unspent_credits(
    stack, sim, s3, table, bucket
):
    now = datetime.now(UTC)
    reconciler, store, woken = reconciler_at(stack, now, max_hold_seconds=3600)
    old, young = new_job_id("chain-stuck"), new_job_id("chain-young")
    for job_id, since in ((old, now - timedelta(hours=2)), (young, now - timedelta(minutes=50))):
        token = f"tok-{job_id}"
        reservation = reserve(stages_from(JobStage.IMAGINE), lambda s: {"imagine": 4}.get(s.value, 2), since, token)
        store.record_received(job_id, since)
        assert store.claim_submission(
            job_id,
            token,
            "hash",
            None,
            "a red balloon",
            {},
            since,
            stage=JobStage.IMAGINE,
            inbox_key=f"inbox/{job_id}.json",
            reservation=reservation,
        )
        assert store.mark_submitted(job_id, token, f"imagine-{job_id}", since, JobStage.IMAGINE)
        assert store.advance_stage(job_id, JobStage.IMAGINE, f"imagine-{job_id}", JobStage.UPSCALE, since)

    reconciler.run()

    ended = job_item(table, old)
    assert (ended["status"], ended.get("error", {}).get("code")) == ("FAILED", "HELD_TOO_LONG")
    assert ended["credits_spent"] == {"imagine": 4}, "the imagine was paid; the upscale and inpaint never were"
    assert ended["credits_returned"] == 4
    assert read_error_json(s3, bucket, old)["error"]["code"] == "HELD_TOO_LONG"
    assert job_item(table, young)["status"] == "PROCESSING"
    assert woken == [f"inbox/{young}.json"], "a younger chain is handed on, as before"
    store.mark_failed(young, JobError("TEST_CLEANUP", "test", ErrorStage.RECONCILE), now, JudgedStage(JobStage.UPSCALE))


# ---- a parent that finished without an image, a held job that loses a file ----------------------


@pytest.mark.parametrize("index", [None, "2"], ids=["as-upscale", "as-grid"])
def test_a_parent_that_finished_without_an_image_is_refused_at_once(settings, s3, table, bucket, index):
    job_id = new_job_id("describe-parent")
    extra = {"index": index} if index else {}
    key = upload(s3, bucket, job_id, job_json(parent_task_id=f"describe-{job_id}", **extra))
    holds = HoldRecorder()

    result = submitter_for(settings, holds).handle_upload(key)

    assert result.outcome is SubmitOutcome.REJECTED, result
    assert job_item(table, job_id).get("error", {}).get("code") == "PARENT_HAS_NO_IMAGE"
    assert holds.held == [], "never held: a finished task gets no image later"


def test_a_held_job_that_loses_a_file_is_no_longer_held_and_the_stale_receipt_rule_ends_it(
    stack, settings, s3, table, bucket
):
    job_id = new_job_id("held-loses-file")
    key = upload(s3, bucket, job_id, job_json(parent_task_id=f"running-1000-{job_id}"))
    holds = HoldRecorder()
    submitter = submitter_for(settings, holds)
    assert submitter.handle_upload(key).outcome is SubmitOutcome.HELD
    assert job_item(table, job_id)["held_at"]
    s3.delete_object(Bucket=bucket, Key=f"{DIRECT_INBOX}{job_id}/mask.png")

    assert submitter.handle_upload(key).outcome is SubmitOutcome.WAITING  # the held message's wake-up

    item = job_item(table, job_id)
    assert "held_at" not in item and "held_until" not in item, "waiting for a file is not a hold"
    assert item["waiting_for"].startswith("waiting for the mask file")
    reconciler, _, _ = reconciler_at(stack, datetime.now(UTC) + timedelta(days=1, minutes=1))
    reconciler.run()
    assert job_item(table, job_id).get("error", {}).get("code") == "JOB_INCOMPLETE"


# ---- a changed job file never strands a chain -----------------------------------------------------


def test_a_chain_whose_job_file_now_starts_at_its_open_stage_still_claims_it(settings, sim, s3, table, bucket):
    job_id = new_job_id("rewritten")
    key = upload_inline(s3, bucket, job_id, chain_job())
    holds = HoldRecorder()
    submitter = submitter_for(settings, holds)
    assert submitter.handle_upload(key).outcome is SubmitOutcome.SUBMITTED
    imagine_task = wait_until(lambda: job_item(table, job_id).get("imagine_task_id"), timeout=30)
    wait_until(lambda: job_item(table, job_id)["stage"] == "upscale", timeout=30, message="the imagine finished")
    # The owner rewrites the file: now it starts from the imagine grid, so its first stage is the
    # chain's open one.
    rewritten = {"parent_task_id": imagine_task, "index": "2", "prompt": "a red balloon"}
    upload_inline(s3, bucket, job_id, rewritten | {"mask": chain_job()["mask"]})

    result = submitter.handle_upload(key)  # the completion's hand-on to the submit queue

    assert result.outcome is SubmitOutcome.SUBMITTED, "a later stage's claim, never a first one that always loses"
    assert job_item(table, job_id)["upscale_task_id"]


def test_a_later_stage_sends_the_prompt_the_first_claim_recorded(settings, sim, s3, table, bucket):
    job_id = new_job_id("prompt-source")
    document = {"parent_task_id": f"grid-{job_id}", "index": "1", "prompt": "a red balloon"} | {
        "mask": chain_job()["mask"]
    }
    key = upload_inline(s3, bucket, job_id, document)
    submitter = submitter_for(settings, HoldRecorder())
    assert submitter.handle_upload(key).outcome is SubmitOutcome.SUBMITTED
    wait_until(lambda: job_item(table, job_id)["stage"] == "inpaint", timeout=30, message="the upscale finished")
    upload_inline(s3, bucket, job_id, document | {"prompt": "a blue kite"})  # changed between the stages

    assert submitter.handle_upload(key).outcome is SubmitOutcome.SUBMITTED

    task_id = wait_until(lambda: job_item(table, job_id).get("inpaint_task_id"), timeout=30)
    assert sim.task(task_id)["prompt"] == "a red balloon", "one source of truth: the prompt the job recorded"
    assert job_item(table, job_id)["prompt"] == "a red balloon"


# ---- time for the paid call, and the mask stored only once it is sent ------------------------------


def test_an_upload_whose_invocation_ran_short_while_reading_its_inputs_is_deferred_untouched(
    settings, sim, s3, table, bucket
):
    job_id = new_job_id("short-of-time")
    key = upload(s3, bucket, job_id)
    holds = HoldRecorder()
    left = iter([60.0, 1.0])  # plenty when the upload is taken; then reading the parent used it up

    result = submitter_for(settings, holds).handle_upload(key, lambda: next(left))

    assert result.outcome is SubmitOutcome.DEFERRED
    item = job_item(table, job_id)
    assert "submit_claim" not in item, "no claim: nothing can be stranded mid-call"
    assert sim.stats()["inpaint_calls"] == 0
    assert holds.held == [(key, None)], "back through the queue, to be handled whole later"
    assert keys_under(s3, bucket, f"results/{job_id}/", inputs=True) == []

    assert submitter_for(settings, HoldRecorder()).handle_upload(key, lambda: 60.0).outcome is SubmitOutcome.SUBMITTED


def test_a_job_held_for_a_provider_slot_writes_no_mask_beside_its_results(settings, sim, s3, table, bucket):
    job_id = new_job_id("held-no-mask")
    key = upload(s3, bucket, job_id)
    # The slot counter exists (a fresh table has none, and no counter means a free slot).
    table.update_item(
        Key={"job_id": SLOTS_KEY},
        UpdateExpression="SET in_use = if_not_exists(in_use, :zero)",
        ExpressionAttributeValues={":zero": 0},
    )

    result = submitter_for(settings, HoldRecorder(), max_active_tasks=0).handle_upload(key)

    assert result.outcome is SubmitOutcome.HELD
    assert keys_under(s3, bucket, f"results/{job_id}/", inputs=True) == [], "nothing was sent, so no mask 'as sent'"
    assert submitter_for(settings, HoldRecorder()).handle_upload(key).outcome is SubmitOutcome.SUBMITTED
    assert keys_under(s3, bucket, f"results/{job_id}/", inputs=True) == [f"results/{job_id}/mask.png"]
    assert sim.stats()["inpaint_calls"] == 1
