"""A burst larger than MAX_ACTIVE_TASKS is held back, never exceeds the limit, and still completes;
a held job's wake-ups stay cheap while no slot is free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.job import parse_timestamp
from vary_region.core.stages import JobStage
from vary_region.store.job_table import JobTable, JudgedStage, ProviderBusy
from vary_region.submit.submitter import SubmitOutcome, SubmitResult

from tests.support.builders import new_job_id, upload_job
from tests.support.faults import hold_provider_tasks
from tests.support.waits import get_job, job_item, settle_stack, wait_for_job, wait_for_status, wait_until


def _held_jobs(table: Any, jobs: list[str]) -> list[str]:
    return [job_id for job_id in jobs if (item := get_job(table, job_id)) and item.get("held_at")]


def test_burst_beyond_the_slot_limit_is_held_back_and_every_job_completes(stack, sim, s3, table, bucket, monkeypatch):
    settle_stack(stack, sim)  # the provider's running-task count below belongs to this burst alone
    limit = stack.options.max_active_tasks
    assert limit is not None, "the suite's stack sets a limit of its own"
    jobs = [new_job_id("burst") for _ in range(limit * 2 + 5)]
    # While the gate is shut no task can finish, so no slot frees: however the burst's submissions
    # interleave, exactly `limit` tasks start and every further job must be held back.
    release = hold_provider_tasks(sim, monkeypatch)
    try:
        for job_id in jobs:
            upload_job(s3, bucket, job_id)
        wait_until(lambda: sim.stats()["tasks_created"] >= limit, 60, message=f"{limit} tasks started")
        held = wait_until(lambda: _held_jobs(table, jobs), 60, message="a job held back for want of a slot")
        assert sim.stats()["tasks_created"] == limit, "no task beyond the limit while every slot is taken"
        assert JobTable(table).slots_in_use() == limit
    finally:
        release.set()
    finished = [wait_for_status(table, job_id, timeout=120) for job_id in jobs]

    assert held
    assert [item["status"] for item in finished] == ["COMPLETED"] * len(jobs)
    # The provider's own count of tasks running at once: the gate filled every slot, never more.
    assert sim.stats()["running_tasks_peak"] == limit
    assert sim.stats()["tasks_created"] == len(jobs)
    wait_until(lambda: JobTable(table).slots_in_use() == 0, 20, message="every finished job gave its slot back")


def test_claims_beyond_the_limit_raise_busy_until_a_job_finishes(stack):
    from vary_region.core.errors import ErrorStage, JobError

    table = boto3.resource("dynamodb").Table(stack.info.table)
    # A store with its own small limit over the same table: the counter item is shared, so start
    # from whatever the other tests left (zero when they all finished).
    base = JobTable(table).slots_in_use()
    store = JobTable(table, max_active_tasks=base + 2)
    now = datetime.now(UTC)
    jobs = [new_job_id("slot") for _ in range(3)]
    for job_id in jobs:
        store.record_received(job_id, now)

    assert store.claim_submission(jobs[0], "t0", "h", "p", None, {}, now)
    assert store.claim_submission(jobs[1], "t1", "h", "p", None, {}, now)
    with pytest.raises(ProviderBusy):
        store.claim_submission(jobs[2], "t2", "h", "p", None, {}, now)
    assert job_item(table, jobs[2]).get("submit_claim") is None, "a busy claim leaves the job untouched"

    assert store.mark_failed(jobs[0], JobError("X", "test", ErrorStage.SUBMIT), now, _claimed("t0"))
    assert store.claim_submission(jobs[2], "t2", "h", "p", None, {}, now)
    # A second terminal write for the same job must not give its slot back twice.
    assert not store.mark_failed(jobs[0], JobError("X", "again", ErrorStage.SUBMIT), now, _claimed("t0"))
    assert store.slots_in_use() == base + 2

    assert store.release_claim(jobs[1], "t1", now)
    assert store.mark_failed(jobs[2], JobError("X", "test", ErrorStage.SUBMIT), now, _claimed("t2"))
    assert store.slots_in_use() == base


def _claimed(token: str) -> JudgedStage:
    return JudgedStage(JobStage.INPAINT, claim=token)


def _take_every_free_slot(store: JobTable, now: datetime) -> list[tuple[str, str]]:
    """Claim placeholder jobs until the counter is full: real claims, through the real transaction."""
    taken: list[tuple[str, str]] = []
    while True:
        job_id, token = new_job_id("slot-filler"), new_job_id("token")
        store.record_received(job_id, now)
        try:
            assert store.claim_submission(job_id, token, "h", "p", None, {}, now)
        except ProviderBusy:
            store.mark_rejected(job_id, JobError("TEST_FILLER", "not needed", ErrorStage.INTAKE), now)
            return taken
        taken.append((job_id, token))


def _give_slots_back(store: JobTable, taken: list[tuple[str, str]], now: datetime) -> None:
    for job_id, token in taken:
        assert store.release_claim(job_id, token, now)
        store.mark_rejected(job_id, JobError("TEST_FILLER", "slot filler, not a job", ErrorStage.INTAKE), now)


def test_a_held_job_wakes_up_without_reading_its_mask_while_no_slot_is_free(stack, sim, s3, table, bucket, monkeypatch):
    settle_stack(stack, sim)
    store = JobTable(table, max_active_tasks=stack.options.max_active_tasks)
    now = datetime.now(UTC)
    job_id = new_job_id("held-cheap")
    mask_key = f"inbox/{job_id}/mask.png"
    submitter = stack.functions["submit"].module.submitter
    mask_reads: list[str] = []
    wake_ups: list[int] = []  # for each wake-up that held the job again: how often it read the mask
    real_read, real_handle = submitter._files.read, submitter.handle_upload

    def counting_read(key: str, max_bytes: int) -> Any:
        if key == mask_key:
            mask_reads.append(key)
        return real_read(key, max_bytes)

    def observed_handle(key: str, time_left: Any = None) -> SubmitResult:
        before = get_job(table, job_id) if key.startswith(f"inbox/{job_id}/") else None
        reads_before = len(mask_reads)
        result = real_handle(key, time_left)
        if before and before.get("held_at") and result.outcome is SubmitOutcome.HELD:
            wake_ups.append(len(mask_reads) - reads_before)
        return result

    monkeypatch.setattr(submitter._files, "read", counting_read)
    monkeypatch.setattr(submitter, "handle_upload", observed_handle)
    taken = _take_every_free_slot(store, now)
    try:
        upload_job(s3, bucket, job_id)
        wait_until(lambda: len(wake_ups) >= 3, 30, message="three wake-ups of the held job")
        assert wake_ups[:3] == [0, 0, 0], "a wake-up without a free slot must not read the mask"
        assert job_item(table, job_id)["status"] == "RECEIVED"
    finally:
        _give_slots_back(store, taken, now)

    item = wait_for_job(table, job_id, timeout=30)

    assert item["status"] == "COMPLETED", item
    assert len(mask_reads) >= 2, "once a slot could be free, the inputs were read and validated again"
    assert sim.stats()["tasks_created"] == 1


def test_a_job_held_for_a_slot_says_about_when_it_is_tried_again_and_its_claim_clears_it(
    stack, sim, s3, table, bucket, monkeypatch
):
    settle_stack(stack, sim)
    store = JobTable(table, max_active_tasks=stack.options.max_active_tasks)
    now = datetime.now(UTC)
    job_id = new_job_id("held-until")
    submitter = stack.functions["submit"].module.submitter
    real_handle = submitter.handle_upload
    holds: list[dict[str, Any]] = []  # the item after each time the job was held

    def observed_handle(key: str, time_left: Any = None) -> SubmitResult:
        result = real_handle(key, time_left)
        if result.job_id == job_id and result.outcome is SubmitOutcome.HELD:
            holds.append(job_item(table, job_id))
        return result

    monkeypatch.setattr(submitter, "handle_upload", observed_handle)
    taken = _take_every_free_slot(store, now)
    try:
        upload_job(s3, bucket, job_id)
        wait_until(lambda: len(holds) >= 3, 30, message="the job held, then woken twice")
    finally:
        _give_slots_back(store, taken, now)

    first = holds[0]
    assert first.get("held_reason") == "PROVIDER_SLOTS_FULL" and first.get("held_until"), first
    # The stack's hold delay is 1 s: the first retry is due a second after the job was held.
    delay = parse_timestamp(first["held_until"]) - parse_timestamp(first["held_at"])
    assert timedelta(seconds=1) <= delay < timedelta(seconds=3)
    assert [item.get("held_until") for item in holds[:3]] == [first["held_until"]] * 3, "wake-ups write nothing"
    item = wait_for_job(table, job_id, timeout=30)
    assert item["status"] == "COMPLETED" and "held_until" not in item and "held_at" not in item
