"""A grid stage's result given as one URL (v2's older pages: `result: "<url>"`) completes: the grid is
copied and cut into its four quarters, stored as the four images would have been, and result.json says
so (`variants_cut_from_grid`). A chain's imagine given so moves on: the upscale needs only its task id.

The one-URL result is a v2 form, so these run in the v2 pass (VARY_REGION_TEST_API_VERSION=v2); the
v1 pass runs their end-to-end twin in tests/e2e/test_apiframe_v2.py against a v2 stack of its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.builders import new_job_id, put_files, upload_job
from tests.support.waits import assert_cut_from_the_grid, settle_stack, wait_for_job


@pytest.fixture()
def one_url(stack: Any, sim: Any) -> Any:
    if stack.options.api_version != "v2":
        pytest.skip("a one-URL result is a v2 form: the v2 pass runs this (and the e2e suite against v2)")
    settle_stack(stack, sim)
    sim.set_faults(string_result=True)
    return sim


def test_given_an_inpaint_result_that_is_the_grid_alone_then_the_job_completes_with_its_quarters(
    one_url, s3, bucket, table
):
    job_id = new_job_id("one-url-inpaint")
    upload_job(s3, bucket, job_id)

    item = wait_for_job(table, job_id, timeout=60)

    assert item["status"] == "COMPLETED", item.get("error")
    assert sorted(item["result"]["images"]) == ["1", "2", "3", "4", "grid"]
    assert_cut_from_the_grid(s3, bucket, job_id)


def test_given_a_chain_whose_grids_are_one_url_then_it_upscales_from_the_imagine_and_completes(
    one_url, s3, bucket, table
):
    job_id = new_job_id("one-url-chain")
    document = {
        "imagine": {"prompt": "a lighthouse at dusk", "index": "3", "aspect_ratio": "1:1"},
        "prompt": "a red balloon",
        "mask": {"regions": [{"rect": [0.25, 0.25, 0.5, 0.5]}], "units": "fraction"},
    }
    put_files(s3, bucket, [(f"inbox/{job_id}.json", json.dumps(document).encode(), "application/json")])

    item = wait_for_job(table, job_id, timeout=90)

    assert item["status"] == "COMPLETED", item.get("error")
    assert all(item.get(f"{stage}_task_id") for stage in ("imagine", "upscale", "inpaint"))
    result = assert_cut_from_the_grid(s3, bucket, job_id)
    assert [task["stage"] for task in result["tasks"]] == ["imagine", "upscale", "inpaint"]
