"""Given a job that starts from a prompt (imagine -> upscale-1x -> inpaint) or from an imagine grid
(`index`: upscale-1x -> inpaint), when it runs through the local stack, then each stage is paid
exactly once however often AWS redelivers and whichever webhooks are lost, the mask is drawn at the
upscale's real (non-square) size, and the results hold the parent, the mask as sent and every task
with its stage and credits."""

from __future__ import annotations

import base64
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image
from vary_region.core.job import parse_timestamp, utc_now

from tests.support.builders import hook_of, mask_png, new_job_id, post_webhook, put_files, secret_of
from tests.support.recorders import WebhookRecorder
from tests.support.waits import (
    FINAL_STATUSES,
    get_job,
    job_item,
    keys_under,
    read_error_json,
    read_json,
    run_reconciler_until,
    settle_stack,
    wait_for_job,
    wait_until,
)

BASE_SIZE = (512, 512)
WIDE = (512, 344)  # the simulator's 3:2 picture for a 512 base: long side 512, short side by the ratio
STAGES = ("imagine", "upscale", "inpaint")


@pytest.fixture()
def settled(stack, sim):
    settle_stack(stack, sim)
    return sim


def chain_job(
    prompt: str = "a lighthouse at dusk", index: Any = "2", aspect_ratio: str = "3:2", **extra: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "imagine": {"prompt": prompt, "index": index, "aspect_ratio": aspect_ratio},
        "prompt": "a red balloon",
        "mask": {"regions": [{"rect": [0.25, 0.25, 0.5, 0.5]}], "units": "fraction"},
        "metadata": {"order": 7},
    }
    document.update(extra)
    return document


def upload_inline(s3, bucket, job_id: str, document: dict[str, Any]) -> str:
    key = f"inbox/{job_id}.json"
    put_files(s3, bucket, [(key, json.dumps(document).encode(), "application/json")])
    return key


def sent_inpaint_mask(sim, job_id: str) -> bytes:
    from vary_region.provider.webhook_token import webhook_token

    bodies = [r for r in list(sim.inpaint_requests) if hook_of(r).endswith("/" + webhook_token(job_id))]
    assert len(bodies) == 1
    return base64.b64decode(bodies[0]["mask"].partition(",")[2])


def test_given_a_prompt_when_the_chain_runs_then_each_stage_is_paid_once_and_the_results_show_it(
    stack, settled, s3, bucket, table, provider
):
    job_id = new_job_id("from-prompt")
    upload_inline(s3, bucket, job_id, chain_job())

    item = wait_for_job(table, job_id, timeout=60)

    assert item["status"] == "COMPLETED", item.get("error")
    assert item["stage"] == "inpaint"
    assert all(item.get(f"{stage}_task_id") for stage in STAGES)
    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [1, 1, 1]
    upscale_request = next(r for r in settled.stage_requests if r["endpoint"] == "/upscale-1x")
    assert (upscale_request["parent_task_id"], upscale_request["index"]) == (item["imagine_task_id"], "2")
    imagine_request = next(r for r in settled.stage_requests if r["endpoint"] == "/imagine")
    assert (imagine_request["prompt"], imagine_request["aspect_ratio"]) == ("a lighthouse at dusk", "3:2")

    sent = sent_inpaint_mask(settled, job_id)
    mask = Image.open(io.BytesIO(sent))
    assert mask.size == WIDE, "drawn at the upscale's real size, read from its first bytes"
    assert sorted(set(mask.convert("L").getdata())) == [0, 255]
    assert mask.convert("L").getpixel((WIDE[0] // 2, WIDE[1] // 2)) == 255
    assert mask.convert("L").getpixel((2, 2)) == 0

    folder = f"results/{job_id}/"
    assert s3.get_object(Bucket=bucket, Key=folder + "mask.png")["Body"].read() == sent, "the mask exactly as sent"
    parent = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=folder + "parent.png")["Body"].read()))
    assert parent.size == WIDE
    result = read_json(s3, bucket, folder + "result.json")
    assert result["tasks"] == [
        {"stage": "imagine", "task_id": item["imagine_task_id"], "credits": 4},
        {"stage": "upscale", "task_id": item["upscale_task_id"], "credits": 2},
        {"stage": "inpaint", "task_id": item["inpaint_task_id"], "credits": 4},
    ]
    assert result["task_id"] == item["inpaint_task_id"] == item["task_id"]
    assert result["mask"] == {"key": folder + "mask.png"} and result["parent"]["key"] == folder + "parent.png"
    assert result["metadata"] == {"order": 7}
    assert sorted(result["images"]) == ["1", "2", "3", "4", "grid"]


def test_given_an_imagine_grid_and_an_index_when_the_job_runs_then_it_upscales_then_inpaints(
    stack, settled, s3, bucket, table, provider
):
    grid_task = f"grid-{new_job_id('g')}"
    job_id = new_job_id("from-grid")
    document = {
        "parent_task_id": grid_task,
        "index": 3,
        "mask": {"regions": [{"ellipse": [256, 256, 100, 60]}], "units": "px"},
    }
    upload_inline(s3, bucket, job_id, document)

    item = wait_for_job(table, job_id, timeout=60)

    assert item["status"] == "COMPLETED", item.get("error")
    assert "imagine_task_id" not in item
    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [0, 1, 1]
    request = next(r for r in settled.stage_requests if r["endpoint"] == "/upscale-1x")
    assert (request["parent_task_id"], request["index"]) == (grid_task, "3")
    assert Image.open(io.BytesIO(sent_inpaint_mask(settled, job_id))).size == BASE_SIZE, "a quarter of the grid"
    tasks = read_json(s3, bucket, f"results/{job_id}/result.json")["tasks"]
    assert [(t["stage"], t["credits"]) for t in tasks] == [("upscale", 2), ("inpaint", 4)]


def test_given_every_webhook_lost_when_the_reconciler_runs_then_each_stage_moves_on_and_is_paid_once(
    stack, settled, s3, bucket, table, provider
):
    settled.set_faults(drop_webhooks="all")
    job_id = new_job_id("lost-hooks")
    upload_inline(s3, bucket, job_id, chain_job())

    item = run_reconciler_until(stack, table, job_id, lambda i: i["status"] == "COMPLETED", timeout=90, interval=0.5)

    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [1, 1, 1]
    assert item["upscale_task_id"] and item["inpaint_task_id"]


def test_given_a_wake_up_lost_between_stages_when_the_reconciler_runs_then_the_next_stage_is_paid_once(
    stack, settled, s3, bucket, table, provider, monkeypatch
):
    reconciler = stack.functions["reconciler"].module.reconciler
    handed_on: list[str] = []
    hand_on = reconciler._wake

    def recorded_hand_on(key: str) -> None:
        handed_on.append(key)
        hand_on(key)

    monkeypatch.setattr(reconciler, "_wake", recorded_hand_on)
    completer = stack.functions["completion"].module.completer
    lost: list[str] = []
    wake, completer._wake = completer._wake, lost.append  # the hand-on to the submit queue never arrives
    try:
        job_id = new_job_id("lost-wake")
        upload_inline(s3, bucket, job_id, chain_job())
        wait_until(lambda: lost, timeout=30, message="the imagine stage finished")
        assert job_item(table, job_id)["stage"] == "upscale"
    finally:
        completer._wake = wake

    quiet = timedelta(seconds=reconciler._settings.reconcile_quiet_seconds + 0.3)
    wait_until(
        lambda: utc_now() - parse_timestamp(job_item(table, job_id)["updated_at"]) > quiet,
        timeout=10,
        message=f"job {job_id} quiet",
    )

    stack.run_reconciler()

    assert f"inbox/{job_id}.json" in handed_on, "one reconciler run after the quiet period hands the chain on"
    item = run_reconciler_until(stack, table, job_id, lambda i: i["status"] == "COMPLETED", timeout=30, interval=0.5)
    assert lost == [f"inbox/{job_id}.json"]
    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [1, 1, 1]
    assert item["stage"] == "inpaint"


def test_given_duplicate_deliveries_in_every_stage_then_each_stage_is_paid_once(
    stack, settled, s3, bucket, table, provider
):
    settled.set_faults(duplicate_webhooks=True, reorder_webhooks=True)
    job_id = new_job_id("dup-chain")
    key = upload_inline(s3, bucket, job_id, chain_job())
    submitter = stack.functions["submit"].module.submitter

    def redeliver_until_done() -> bool:
        submitter.handle_upload(key)  # the same S3 event, again and again, whatever stage is open
        return job_item(table, job_id).get("status") == "COMPLETED"

    wait_until(redeliver_until_done, timeout=60, interval=0.1, message="the chain completes")

    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [1, 1, 1]


def test_given_a_replayed_webhook_of_a_stage_the_job_has_left_then_it_is_accepted_and_changes_nothing(
    stack, settled, s3, bucket, table, monkeypatch
):
    answers = WebhookRecorder.install(stack, monkeypatch)
    job_id = new_job_id("replay")
    upload_inline(s3, bucket, job_id, chain_job())

    def refused() -> dict[str, list[int]]:
        by_stage = {stage: answers.statuses(job_id, stage) for stage in STAGES}
        return {stage: got for stage, got in by_stage.items() if any(status >= 300 for status in got)}

    # Each stage's own webhooks open its URL: one refused is the failure, seen as soon as it is answered.
    wait_until(
        lambda: refused() or (get_job(table, job_id) or {}).get("status") in FINAL_STATUSES,
        timeout=30,
        message=f"job {job_id} finished, or a webhook of it refused",
    )
    assert not refused(), f"a stage's own webhooks were refused: {refused()}"
    done = wait_for_job(table, job_id, timeout=30)
    assert done["status"] == "COMPLETED"
    imagine_task = done["imagine_task_id"]
    secret = next(
        secret_of(r)
        for r in settled.stage_requests
        if r["endpoint"] == "/imagine" and hook_of(r).endswith(_token(job_id, "imagine"))
    )
    before = get_job(table, job_id)

    progress = post_webhook(
        stack,
        job_id,
        {"task_id": imagine_task, "status": "processing", "percentage": "10"},
        secret=secret,
        stage="imagine",
    )
    wrong_stage = post_webhook(stack, job_id, {"task_id": imagine_task}, secret=secret, stage="upscale")

    assert progress.status_code == 200 and progress.json()["outcome"] == "unchanged"
    assert wrong_stage.status_code == 401, "one stage's secret opens no other stage's URL"
    assert get_job(table, job_id) == before


def _token(job_id: str, stage: str) -> str:
    from vary_region.provider.webhook_token import webhook_token

    return "/" + webhook_token(job_id, stage)


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ({"parent_task_id": "grid-abc", "mask": {"regions": [{"rect": [0, 0, 10, 10]}]}}, "PARENT_IS_GRID"),
        (
            {"parent_task_id": "up-abc", "index": "2", "mask": {"regions": [{"rect": [0, 0, 10, 10]}]}},
            "PARENT_NOT_GRID",
        ),
        (
            {"parent_task_id": "failed-abc", "index": "2", "mask": {"regions": [{"rect": [0, 0, 9, 9]}]}},
            "PARENT_FAILED",
        ),
        (
            {"parent_task_id": "missing-abc", "index": "1", "mask": {"regions": [{"rect": [0, 0, 9, 9]}]}},
            "PARENT_NOT_FOUND",
        ),
        (chain_job(mask={"regions": [{"rect": [0, 0, 10, 10]}], "units": "px"}), "MASK_REGIONS_INVALID"),
        (chain_job(index="5"), "INDEX_INVALID"),
        (chain_job(aspect_ratio="wide"), "ASPECT_RATIO_INVALID"),
        (dict(chain_job(), parent_task_id="up-abc"), "PARENT_AMBIGUOUS"),
    ],
)
def test_given_an_unusable_chain_then_it_is_rejected_with_its_code_and_nothing_is_paid(
    stack, settled, s3, bucket, table, provider, document, code
):
    job_id = new_job_id("bad-chain")
    upload_inline(s3, bucket, job_id, document)

    item = wait_for_job(table, job_id, timeout=30)

    assert (item["status"], item.get("error", {}).get("code")) == ("REJECTED", code)
    assert read_error_json(s3, bucket, job_id)["error"]["code"] == code
    assert [provider.stage_calls(job_id, stage) for stage in STAGES] == [0, 0, 0]
    assert keys_under(s3, bucket, f"results/{job_id}/", inputs=True) == [f"results/{job_id}/error.json"]


def test_given_a_mask_file_of_another_aspect_ratio_in_a_chain_from_a_prompt_then_nothing_is_paid(
    stack, settled, s3, bucket, table, provider
):
    job_id = new_job_id("ratio")
    document = chain_job()
    del document["mask"]
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/mask.png", mask_png((512, 512)), None),
            (f"inbox/{job_id}/job.json", json.dumps(document).encode(), "application/json"),
        ],
    )

    item = wait_for_job(table, job_id, timeout=30)

    assert (item["status"], item.get("error", {}).get("code")) == ("REJECTED", "MASK_SIZE_MISMATCH")
    assert "3:2" in item["error"]["message"]
    assert [provider.stage_calls(job_id, stage) for stage in STAGES] == [0, 0, 0]


def test_given_a_mask_file_at_the_chains_aspect_ratio_then_it_is_scaled_to_the_upscale(
    stack, settled, s3, bucket, table
):
    job_id = new_job_id("ratio-ok")
    document = chain_job()
    del document["mask"]
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/mask.png", mask_png((1536, 1024), box=(600, 400, 900, 600)), None),
            (f"inbox/{job_id}/job.json", json.dumps(document).encode(), "application/json"),
        ],
    )

    item = wait_for_job(table, job_id, timeout=60)

    assert item["status"] == "COMPLETED", item.get("error")
    sent = Image.open(io.BytesIO(sent_inpaint_mask(settled, job_id))).convert("L")
    assert sent.size == WIDE and sorted(set(sent.getdata())) == [0, 255]


def test_given_a_grid_parent_and_a_mask_file_of_another_size_than_the_upscale_then_nothing_is_paid(
    stack, settled, s3, bucket, table, provider
):
    job_id = new_job_id("grid-size")
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/mask.png", mask_png((1024, 1024)), None),  # the grid's size, not the upscale's
            (
                f"inbox/{job_id}/job.json",
                json.dumps({"parent_task_id": f"grid-{job_id}", "index": "1"}).encode(),
                "application/json",
            ),
        ],
    )

    item = wait_for_job(table, job_id, timeout=30)

    assert (item["status"], item.get("error", {}).get("code")) == ("REJECTED", "MASK_SIZE_MISMATCH")
    assert [provider.stage_calls(job_id, stage) for stage in STAGES] == [0, 0, 0]


def test_given_a_chain_whose_files_left_the_inbox_between_stages_then_it_fails_and_says_why(
    stack, settled, s3, bucket, table, provider
):
    completer = stack.functions["completion"].module.completer
    held: list[str] = []
    wake, completer._wake = completer._wake, held.append
    try:
        job_id = new_job_id("files-gone")
        key = upload_inline(s3, bucket, job_id, chain_job())
        wait_until(lambda: held, timeout=30, message="the imagine stage finished")
    finally:
        completer._wake = wake
    s3.delete_object(Bucket=bucket, Key=key)

    item = run_reconciler_until(stack, table, job_id, lambda i: i["status"] == "FAILED", timeout=30, interval=0.5)

    assert item["error"]["code"] == "JOB_FILES_MISSING"
    assert read_error_json(s3, bucket, job_id)["error"]["code"] == "JOB_FILES_MISSING"
    assert [provider.stage_calls(job_id, stage, 200) for stage in STAGES] == [1, 0, 0]


def test_given_a_parent_image_that_can_no_longer_be_copied_then_the_job_completes_without_it(
    stack, settled, s3, bucket, table, monkeypatch
):
    from tests.support.faults import hold_provider_tasks
    from tests.support.waits import wait_for_task_id

    release = hold_provider_tasks(settled, monkeypatch)
    try:
        job_id = new_job_id("parent-gone")
        upload_inline(s3, bucket, job_id, {"parent_task_id": f"up-{job_id}", "mask": chain_job()["mask"]})
        wait_for_task_id(table, job_id)
        serve = settled._image_for_path
        # The parent's URL expired between the submission and the copy: its host answers 404.
        monkeypatch.setattr(
            settled, "_image_for_path", lambda path: None if path.endswith("/parent.png") else serve(path)
        )
    finally:
        release.set()

    item = wait_for_job(table, job_id, timeout=30)

    assert item["status"] == "COMPLETED", item.get("error")
    folder = f"results/{job_id}/"
    assert f"{folder}parent.png" not in keys_under(s3, bucket, folder, inputs=True)
    result = read_json(s3, bucket, folder + "result.json")
    assert "parent" not in result and sorted(result["images"]) == ["1", "2", "3", "4", "grid"]
    assert result["mask"] == {"key": folder + "mask.png"}
