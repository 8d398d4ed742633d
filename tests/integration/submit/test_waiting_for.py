"""A job missing one of its files says which one, on its item, until the file arrives."""

from __future__ import annotations

import pytest

from tests.support.builders import job_json, mask_png, new_job_id
from tests.support.waits import get_job, job_item, wait_for_job, wait_for_queue_drained, wait_until


@pytest.mark.parametrize(
    "first, missing",
    [
        ("job.json", "waiting for the mask file inbox/{id}/mask.(png|jpg|jpeg|webp)"),
        ("mask.png", "waiting for the job file inbox/{id}/job.json"),
    ],
)
def test_given_one_file_of_a_job_then_its_item_says_which_file_it_waits_for_until_it_arrives(
    stack, sim, s3, table, bucket, first, missing
):
    job_id = new_job_id("half")
    files = {"job.json": job_json(), "mask.png": mask_png()}
    s3.put_object(Bucket=bucket, Key=f"inbox/{job_id}/{first}", Body=files.pop(first))

    item = wait_until(lambda: (i := get_job(table, job_id)) and i.get("waiting_for") and i, message="waiting_for")
    assert item["status"] == "RECEIVED"
    assert item["waiting_for"] == missing.format(id=job_id)

    ((second, body),) = files.items()
    s3.put_object(Bucket=bucket, Key=f"inbox/{job_id}/{second}", Body=body)
    item = wait_for_job(table, job_id)
    wait_for_queue_drained(stack)

    assert item["status"] == "COMPLETED", item.get("error")
    assert "waiting_for" not in job_item(table, job_id), "a whole job no longer waits for anything"
