"""COMPLETED means the whole result: a finished inpaint is a grid plus exactly four images.

Any other shape (one image, four without a grid, five, a repeated image, none) is asked of Fetch
again a few times and then fails the job as RESULT_INCOMPLETE, with error.json and no image stored;
a shape that becomes whole on a later Fetch completes normally, with exactly five images.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.builders import new_job_id, upload_job
from tests.support.waits import (
    keys_under,
    read_error_json,
    read_json,
    run_reconciler_until,
    wait_for_job,
    wait_for_object,
    wait_for_task_id,
)

PARTIAL_SHAPES = ["one_image", "no_grid", "five_images", "repeated_image", "no_images"]
# The stack's setting (Settings.result_fetch_attempts): Fetch is asked this often before giving up.
FETCH_ATTEMPTS = 3
WHOLE = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]


def _names(s3: Any, bucket: str, job_id: str) -> list[str]:
    return [key.rsplit("/", 1)[1] for key in keys_under(s3, bucket, f"results/{job_id}/")]


@pytest.mark.parametrize("shape", PARTIAL_SHAPES)
def test_given_a_finished_result_that_is_not_whole_then_the_job_fails_result_incomplete_and_stores_no_image(
    stack, sim, s3, table, bucket, provider, shape
):
    sim.set_faults(partial_result=shape)
    job_id = new_job_id(f"partial-{shape}")
    upload_job(s3, bucket, job_id)

    item = wait_for_job(table, job_id)
    wait_for_object(s3, bucket, f"results/{job_id}/error.json")  # written right after the state

    assert item["status"] == "FAILED", item
    assert item["error"]["code"] == "RESULT_INCOMPLETE" and item["error"]["stage"] == "provider"
    assert _names(s3, bucket, job_id) == ["error.json"], "no image of an incomplete result is stored"
    assert read_error_json(s3, bucket, job_id)["error"] == item["error"]
    assert provider.image_gets(item["task_id"]) == 0
    assert provider.fetches(item["task_id"]) == FETCH_ATTEMPTS, "asked again a few times before failing"


def test_given_a_result_that_becomes_whole_on_a_later_fetch_then_the_job_completes_with_exactly_five_images(
    stack, sim, s3, table, bucket, provider
):
    sim.set_faults(partial_result="five_images", partial_result_fetches=FETCH_ATTEMPTS - 1)
    job_id = new_job_id("partial-then-whole")
    upload_job(s3, bucket, job_id)

    item = wait_for_job(table, job_id)

    assert item["status"] == "COMPLETED", item.get("error")
    assert _names(s3, bucket, job_id) == WHOLE, "never a 5.png"
    assert set(read_json(s3, bucket, f"results/{job_id}/result.json")["images"]) == {"grid", "1", "2", "3", "4"}
    assert provider.fetches(item["task_id"]) == FETCH_ATTEMPTS
    assert provider.image_gets(item["task_id"]) == 5


def test_given_lost_webhooks_and_a_partial_result_then_the_reconciler_path_fails_it_the_same_way(
    stack, sim, s3, table, bucket
):
    sim.set_faults(partial_result="one_image", drop_webhooks="all")
    job_id = new_job_id("partial-reconciled")
    upload_job(s3, bucket, job_id)
    wait_for_task_id(table, job_id)

    item = run_reconciler_until(stack, table, job_id, lambda i: i["status"] == "FAILED", timeout=30)
    wait_for_object(s3, bucket, f"results/{job_id}/error.json")

    assert item["error"]["code"] == "RESULT_INCOMPLETE"
    assert _names(s3, bucket, job_id) == ["error.json"]
