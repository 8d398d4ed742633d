"""A burst larger than MAX_ACTIVE_TASKS is held back, never exceeds the limit, and still completes."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from vary_region.task_store import ProviderBusy, TaskStore

from tests.builders import get_job, new_job_id, upload_job, wait_for_status


def test_burst_beyond_the_slot_limit_is_held_back_and_every_job_completes(stack, sim, s3, table, bucket):
    limit = stack.options.max_active_tasks
    jobs = [new_job_id("burst") for _ in range(limit * 2 + 5)]
    sim.step_delay = 0.4  # tasks long enough that the burst really overlaps
    try:
        for job_id in jobs:
            upload_job(s3, bucket, job_id)
        finished = [wait_for_status(table, job_id, timeout=90) for job_id in jobs]
    finally:
        sim.step_delay = 0.02

    assert [item["status"] for item in finished] == ["COMPLETED"] * len(jobs)
    # The provider's own count of tasks running at once: the burst fills every slot, never more.
    assert sim.stats()["running_tasks_peak"] == limit
    assert sim.stats()["tasks_created"] == len(jobs)
    assert TaskStore(table).slots_in_use() == 0, "every finished job gives its slot back"


def test_claims_beyond_the_limit_raise_busy_until_a_job_finishes(stack):
    from vary_region.errors import JobError, Stage

    table = boto3.resource("dynamodb").Table(stack.info.table)
    # A store with its own small limit over the same table: the counter item is shared, so start
    # from whatever the other tests left (zero when they all finished).
    base = TaskStore(table).slots_in_use()
    store = TaskStore(table, max_active_tasks=base + 2)
    now = datetime.now(UTC)
    jobs = [new_job_id("slot") for _ in range(3)]
    for job_id in jobs:
        store.record_received(job_id, now)

    assert store.claim_submission(jobs[0], "t0", "h", "p", None, {}, now)
    assert store.claim_submission(jobs[1], "t1", "h", "p", None, {}, now)
    with pytest.raises(ProviderBusy):
        store.claim_submission(jobs[2], "t2", "h", "p", None, {}, now)
    assert get_job(table, jobs[2]).get("submit_claim") is None, "a busy claim leaves the job untouched"

    assert store.mark_failed(jobs[0], JobError("X", "test", Stage.SUBMIT), now)
    assert store.claim_submission(jobs[2], "t2", "h", "p", None, {}, now)
    # A second terminal write for the same job must not give its slot back twice.
    assert not store.mark_failed(jobs[0], JobError("X", "again", Stage.SUBMIT), now)
    assert store.slots_in_use() == base + 2

    assert store.release_claim(jobs[1], "t1", now)
    assert store.mark_failed(jobs[2], JobError("X", "test", Stage.SUBMIT), now)
    assert store.slots_in_use() == base
