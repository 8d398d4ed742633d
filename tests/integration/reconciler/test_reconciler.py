"""Lost webhooks: the reconciler asks Fetch about jobs that have been quiet for longer than the quiet
period (1 s in the test stack) and finishes them through the webhook's own completion path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from vary_region.store.schema import ACTIVE_SHARDS, active_shard

from tests.support.builders import new_job_id, upload_job
from tests.support.waits import (
    get_job,
    job_item,
    keys_under,
    object_version,
    read_json,
    run_reconciler_until,
    wait_for_object,
    wait_for_sim_task,
    wait_for_task_id,
    wait_until,
)

RESULT_KEYS = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]
QUIET_SECONDS = 1.0  # conftest: reconcile_quiet_seconds=1


def is_final(item: dict[str, Any]) -> bool:
    return item.get("status") in ("COMPLETED", "FAILED", "REJECTED")


def age_seconds(timestamp: str) -> float:
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()


def wait_until_quiet(table: Any, job_id: str, margin: float = 0.3) -> dict[str, Any]:
    """Wait until the job's last change is older than the quiet period (so the reconciler may look)."""
    return wait_until(
        lambda: (item := get_job(table, job_id)) and age_seconds(item["updated_at"]) > QUIET_SECONDS + margin and item,
        timeout=10,
        message=f"job {job_id} quiet",
    )


def assert_reconciler_changes_nothing_more(stack: Any, s3: Any, bucket: str, table: Any, job_id: str) -> None:
    """Once the job is old enough to be looked at again, further runs leave the item and its files alone."""
    finished = job_item(table, job_id)
    keys = keys_under(s3, bucket, f"results/{job_id}/")
    versions = {key: object_version(s3, bucket, key) for key in keys}
    wait_until_quiet(table, job_id)

    for _ in range(2):
        stack.run_reconciler()

    assert get_job(table, job_id) == finished
    assert keys_under(s3, bucket, f"results/{job_id}/") == keys
    assert {key: object_version(s3, bucket, key) for key in keys} == versions
    assert "active" not in finished, "a finished job leaves the reconciler's index"


def job_id_in_last_shard(prefix: str) -> str:
    """A job id whose item lands in the last shard of the reconciler's index: a reconciler that reads
    only some shards misses it on every run, not by the luck of a random id."""
    last = f"ACTIVE#{ACTIVE_SHARDS - 1}"
    return next(job_id for job_id in iter(lambda: new_job_id(prefix), None) if active_shard(job_id) == last)


def start_job_with_lost_webhooks(sim: Any, s3: Any, bucket: str, table: Any, drop: str, **faults: Any) -> str:
    sim.set_faults(drop_webhooks=drop, **faults)
    job_id = job_id_in_last_shard(f"lost-{drop}")
    upload_job(s3, bucket, job_id)
    item = wait_for_task_id(table, job_id)
    wait_for_sim_task(sim, item["task_id"])  # the provider is done; its news never arrives
    sim.reset()
    return job_id


@pytest.mark.parametrize("drop", ["final", "all"])
def test_given_lost_webhooks_when_quiet_period_passes_then_reconciler_completes_job_and_later_runs_change_nothing(
    stack, sim, s3, table, bucket, provider, drop
):
    job_id = start_job_with_lost_webhooks(sim, s3, bucket, table, drop)
    assert sim.wait_idle(timeout=10)
    stuck = job_item(table, job_id)
    expected_status = {"final": "PROCESSING", "all": "SUBMITTED"}[drop]
    assert stuck["status"] == expected_status
    if drop == "final":
        assert int(stuck["percentage"]) == 75  # the last progress webhook that did arrive
    assert keys_under(s3, bucket, f"results/{job_id}/") == []
    quiet = wait_until_quiet(table, job_id)

    stack.run_reconciler()

    # One run after the quiet period looks at the job: it hands it to completion and touches it.
    looked_at = job_item(table, job_id)
    assert looked_at["updated_at"] != quiet["updated_at"] or is_final(looked_at), (
        f"a reconciler run after the quiet period did not look at job {job_id} (index shard {quiet.get('active')})"
    )
    item = run_reconciler_until(stack, table, job_id, is_final)

    assert item["status"] == "COMPLETED", item.get("error")
    assert int(item["percentage"]) == 100
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/{n}" for n in RESULT_KEYS]
    result = read_json(s3, bucket, f"results/{job_id}/result.json")
    assert result["task_id"] == item["task_id"]
    assert set(result["images"]) == {"grid", "1", "2", "3", "4"}
    assert provider.fetches(item["task_id"]) >= 1, "the result was read from Fetch"
    assert provider.image_gets(item["task_id"]) == 5
    assert provider.inpaint_calls(job_id) == 1, "recovery never resubmits"
    if drop == "final":
        assert_reconciler_changes_nothing_more(stack, s3, bucket, table, job_id)


def test_given_job_touched_recently_when_reconciler_runs_then_it_is_left_alone(stack, sim, s3, table, bucket):
    job_id = start_job_with_lost_webhooks(sim, s3, bucket, table, "all")
    before = job_item(table, job_id)
    observable = age_seconds(before["updated_at"]) < QUIET_SECONDS * 0.7

    if observable:
        stack.run_reconciler()
        after = get_job(table, job_id)
    run_reconciler_until(stack, table, job_id, is_final)  # leave no open work behind

    if not observable:
        pytest.skip("the machine was too slow to observe the job inside its quiet period")
    assert after == before


def test_given_failed_task_with_lost_webhooks_then_reconciler_marks_job_failed_once(stack, sim, s3, table, bucket):
    job_id = start_job_with_lost_webhooks(sim, s3, bucket, table, "all", fail_task="Content policy violation")

    item = run_reconciler_until(stack, table, job_id, is_final)

    assert item["status"] == "FAILED"
    assert item["error"] == {"code": "PROVIDER_TASK_FAILED", "message": "Content policy violation", "stage": "provider"}
    # The state is written first and error.json second (by design): wait for the document itself.
    error = json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json"))
    assert error["error"]["code"] == "PROVIDER_TASK_FAILED"
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/error.json"]
    assert_reconciler_changes_nothing_more(stack, s3, bucket, table, job_id)


@pytest.fixture()
def slow_provider(sim: Any) -> Iterator[Any]:
    """Tasks that take a while: the first progress step comes 2 s after submission."""
    original = sim.step_delay
    sim.step_delay = 2.0
    try:
        yield sim
    finally:
        sim.step_delay = original


def test_given_task_still_running_at_provider_when_reconciler_runs_then_job_is_touched_not_finished(
    stack, slow_provider, s3, table, bucket, provider
):
    sim = slow_provider
    sim.set_faults(drop_webhooks="all")
    job_id = new_job_id("running")
    upload_job(s3, bucket, job_id)
    task_id = wait_for_task_id(table, job_id)["task_id"]
    before = wait_until_quiet(table, job_id, margin=0.1)
    assert sim.task(task_id)["status"] != "finished"

    report = stack.run_reconciler()

    after = job_item(table, job_id)
    assert sim.task(task_id)["status"] != "finished", "the provider must still be working for this test"
    assert after["status"] in ("SUBMITTED", "PROCESSING"), after
    assert after["updated_at"] > before["updated_at"], "the reconciler notes that it looked"
    assert "active" in after
    assert keys_under(s3, bucket, f"results/{job_id}/") == []
    assert report["examined"] >= 1
    assert provider.fetches(task_id) == 1 and provider.image_gets(task_id) == 0
    # Touched means quiet again: an immediate second run does not ask the provider about it.
    stack.run_reconciler()
    assert job_item(table, job_id)["updated_at"] == after["updated_at"]
    assert provider.fetches(task_id) == 1

    # Let the provider finish; the reconciler then brings the job home.
    sim.step_delay = 0.02
    wait_for_sim_task(sim, task_id, timeout=10)
    item = run_reconciler_until(stack, table, job_id, is_final)
    assert item["status"] == "COMPLETED"
