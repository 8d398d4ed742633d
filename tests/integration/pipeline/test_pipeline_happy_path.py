"""Given a job uploaded to inbox/, when the pipeline runs, then five images and result.json land in
results/ and the job item is COMPLETED, with exactly one paid submission."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from tests.support.builders import job_json, mask_png, new_job_id, upload_job
from tests.support.waits import keys_under, read_json, wait_for_status

RESULT_FILES = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]


@pytest.mark.parametrize("mask_first", [False, True], ids=["spec-then-mask", "mask-then-spec"])
def test_job_in_either_upload_order_completes_with_five_images(stack, sim, s3, table, bucket, mask_first):
    job_id = new_job_id()
    upload_job(s3, bucket, job_id, spec=job_json(metadata={"customer": "acme"}), mask_first=mask_first)

    item = wait_for_status(table, job_id)

    assert item["status"] == "COMPLETED"
    assert int(item["percentage"]) == 100
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/{name}" for name in RESULT_FILES]
    result = read_json(s3, bucket, f"results/{job_id}/result.json")
    assert result["task_id"] == item["task_id"]
    assert result["metadata"] == {"customer": "acme"}
    assert result["prompt"] == "a red balloon"
    assert set(result["images"]) == {"grid", "1", "2", "3", "4"}
    assert result["timings"]["duration_seconds"] >= 0
    assert sim.stats()["inpaint_calls"] == 1
    # The user's files are untouched, and nothing was written under inbox/.
    assert keys_under(s3, bucket, f"inbox/{job_id}") == [f"inbox/{job_id}/job.json", f"inbox/{job_id}/mask.png"]


def test_result_images_redraw_only_the_masked_region(stack, sim, s3, table, bucket):
    job_id = new_job_id()
    box = (100, 100, 300, 260)
    upload_job(s3, bucket, job_id, mask=mask_png(box=box), spec=job_json(parent_task_id="parent-pixels"))
    wait_for_status(table, job_id, ("COMPLETED",))

    parent = Image.open(io.BytesIO(sim.parent_image_png("parent-pixels"))).convert("RGB")
    variation = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=f"results/{job_id}/1.png")["Body"].read()))
    difference = ImageChops.difference(parent, variation.convert("RGB")).getbbox()
    assert difference is not None, "the masked region must be redrawn"
    left, top, right, bottom = difference
    assert left >= box[0] and top >= box[1] and right <= box[2] and bottom <= box[3]


def test_inline_job_with_data_url_mask_and_encoded_key_completes(stack, sim, s3, table, bucket):
    import base64
    import json

    job_id = new_job_id("inline job ü")
    document = {
        "parent_task_id": "parent-inline",
        "prompt": "a kite",
        "mask": "data:image/png;base64," + base64.b64encode(mask_png()).decode(),
    }
    s3.put_object(Bucket=bucket, Key=f"inbox/{job_id}.json", Body=json.dumps(document).encode())

    item = wait_for_status(table, job_id)

    assert item["status"] == "COMPLETED"
    assert f"results/{job_id}/grid.png" in keys_under(s3, bucket, f"results/{job_id}/")
    sent = sim.inpaint_requests[-1]
    assert sent["mask"].startswith("data:image/png;base64,")
    assert sent["parent_task_id"] == "parent-inline"
