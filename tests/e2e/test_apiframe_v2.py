"""APIFRAME v2 end to end: `make local` started with APIFRAME_API_VERSION=v2 (a stack process of its
own, its simulator speaking v2: `/v2/...` paths, `X-API-Key`, typed errors, signed webhooks).

A job completes, fails, is refused and survives lost and duplicated webhooks exactly as through v1,
with one paid call per stage; a webhook that is forged, signed with another key, altered after
signing or sent without the job stage's URL secret gets 401 and changes nothing; a replayed one
changes nothing either.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from vary_region_local.simulator_v2 import signature

from tests.e2e.conftest import StackProcess, user_env
from tests.support.builders import job_json, mask_png, new_job_id, upload_job
from tests.support.waits import assert_cut_from_the_grid, read_error_json, read_json, wait_for_status

pytestmark = [pytest.mark.e2e, pytest.mark.fixed_generation]
API_KEY = "afk_local-v2-key"


class V2Stack:
    def __init__(self, stack: StackProcess) -> None:
        info = stack.info
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"]
        )
        self.s3 = session.client("s3", endpoint_url=info["aws_endpoint_url"])
        self.table = session.resource("dynamodb", endpoint_url=info["aws_endpoint_url"]).Table(info["table"])
        self.bucket: str = info["bucket"]
        self.sim: str = info["apiframe_base_url"]

    def faults(self, **faults: Any) -> None:
        requests.post(f"{self.sim}/_sim/faults", json=faults, timeout=5).raise_for_status()

    def reset(self) -> None:
        requests.post(f"{self.sim}/_sim/reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, int]:
        return requests.get(f"{self.sim}/_sim/stats", timeout=5).json()

    def webhooks_of(self, task_id: str) -> list[dict[str, Any]]:
        sent = requests.get(f"{self.sim}/_sim/webhooks", timeout=5).json()["webhooks"]
        return [hook for hook in sent if json.loads(hook["body"]).get("jobId") == task_id]


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Stack]:
    env = user_env(tmp_path_factory.mktemp("home")) | {"APIFRAME_API_VERSION": "v2", "APIFRAME_API_KEY": API_KEY}
    stack = StackProcess(tmp_path_factory.mktemp("state"), env)
    stack.start()
    yield V2Stack(stack)
    stack.stop()


@pytest.fixture()
def sim(v2: V2Stack) -> Iterator[V2Stack]:
    v2.reset()
    yield v2
    v2.reset()


def test_a_job_completes_through_v2_with_one_paid_call(sim: V2Stack) -> None:
    job_id = new_job_id("v2-plain")
    upload_job(sim.s3, sim.bucket, job_id)

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=40)

    assert item["status"] == "COMPLETED", item
    result = read_json(sim.s3, sim.bucket, f"results/{job_id}/result.json")
    assert sorted(result["images"]) == ["1", "2", "3", "4", "grid"]
    assert [(task["stage"], task["credits"]) for task in result["tasks"]] == [("inpaint", 16)]  # v2's price
    assert sim.stats()["inpaint_calls"] == 1
    hooks = sim.webhooks_of(item["task_id"])
    assert hooks and all("~" in hook["url"] and "x-webhook-secret" not in hook["headers"] for hook in hooks)


def test_a_chain_from_a_prompt_completes_through_v2(sim: V2Stack) -> None:
    job_id = new_job_id("v2-chain")
    document = {
        "imagine": {"prompt": "a lighthouse", "index": "2"},
        "mask": {"regions": [{"rect": [0.2, 0.2, 0.3, 0.3]}], "units": "fraction"},
    }
    sim.s3.put_object(Bucket=sim.bucket, Key=f"inbox/{job_id}/job.json", Body=json.dumps(document).encode())

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=60)

    assert item["status"] == "COMPLETED", item
    tasks = read_json(sim.s3, sim.bucket, f"results/{job_id}/result.json")["tasks"]
    assert [(task["stage"], task["credits"]) for task in tasks] == [("imagine", 16), ("upscale", 4), ("inpaint", 16)]
    stats = sim.stats()
    assert (stats["imagine_calls"], stats["upscale_calls"], stats["inpaint_calls"]) == (1, 1, 1)


def test_a_chain_whose_generate_answer_is_lost_completes_with_one_task_and_one_charge_per_stage(
    sim: V2Stack,
) -> None:
    """The simulator takes the chain's generate, charges it and closes the connection without an
    answer: the submitter sends it again with the same Idempotency-Key and gets the same job."""
    sim.faults(lose_answer_next=1)  # the next paid call: this chain's generate
    job_id = new_job_id("v2-lost-generate")
    document = {
        "imagine": {"prompt": "a lighthouse", "aspect_ratio": "3:2", "index": "2"},
        "mask": {"regions": [{"rect": [0.2, 0.2, 0.3, 0.3]}], "units": "fraction"},
    }
    sim.s3.put_object(Bucket=sim.bucket, Key=f"inbox/{job_id}/job.json", Body=json.dumps(document).encode())

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=60)

    assert item["status"] == "COMPLETED" and "needs_attention" not in item, item
    tasks = read_json(sim.s3, sim.bucket, f"results/{job_id}/result.json")["tasks"]
    assert [(task["stage"], task["credits"]) for task in tasks] == [("imagine", 16), ("upscale", 4), ("inpaint", 16)]
    stats = sim.stats()
    assert stats["imagine_calls"] == 2, "the lost generate was sent again"
    assert (stats["tasks_created"], stats["credits_spent"]) == (3, 36), "one task, and one charge, per stage"


def test_a_job_completes_when_the_statuses_are_lower_case_as_on_older_pages(sim: V2Stack) -> None:
    sim.faults(lowercase_statuses=True)
    job_id = new_job_id("v2-lower-case")
    upload_job(sim.s3, sim.bucket, job_id)

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=40)

    assert item["status"] == "COMPLETED", item
    assert json.loads(sim.webhooks_of(item["task_id"])[-1]["body"])["status"] == "completed"


def test_a_grid_answered_as_one_url_completes_with_its_quarters(sim: V2Stack) -> None:
    """An older page's `result`: one URL. The parent (an upsample) is read from it; the inpaint's grid
    alone is copied and cut into the four images it is a 2x2 composite of."""
    sim.faults(string_result=True)
    job_id = new_job_id("v2-one-url")
    upload_job(sim.s3, sim.bucket, job_id)

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=40)

    assert item["status"] == "COMPLETED", item
    assert_cut_from_the_grid(sim.s3, sim.bucket, job_id)
    assert sim.stats()["inpaint_calls"] == 1, "the parent was read from its one URL, and the inpaint paid once"


def test_a_failed_v2_job_is_failed_with_error_json(sim: V2Stack) -> None:
    sim.faults(fail_task="Content policy violation")
    job_id = new_job_id("v2-failed")
    upload_job(sim.s3, sim.bucket, job_id)

    item = wait_for_status(sim.table, job_id, ("FAILED",), timeout=40)

    assert "Content policy violation" in item["error"]["message"]
    assert read_error_json(sim.s3, sim.bucket, job_id)["error"]["code"] == item["error"]["code"]


@pytest.mark.parametrize(
    ("status", "code"), [(402, "PROVIDER_CREDITS_INSUFFICIENT"), (409, "PARENT_TOO_OLD"), (400, "PROVIDER_REJECTED")]
)
def test_v2_refusals_end_the_job_with_their_own_code_and_are_not_resent(sim: V2Stack, status: int, code: str) -> None:
    sim.faults(reject_inpaint="refused by the simulated provider", reject_inpaint_status=status)
    job_id = new_job_id(f"v2-refused-{status}")
    upload_job(sim.s3, sim.bucket, job_id)

    item = wait_for_status(sim.table, job_id, ("FAILED", "REJECTED"), timeout=40)

    assert item["error"]["code"] == code
    assert read_error_json(sim.s3, sim.bucket, job_id)["error"]["code"] == code
    assert sim.stats()["inpaint_calls"] == 1


def test_a_bad_mask_is_rejected_before_anything_is_paid_through_v2(sim: V2Stack) -> None:
    job_id = new_job_id("v2-blank")
    upload_job(sim.s3, sim.bucket, job_id, mask=mask_png(box=None))

    item = wait_for_status(sim.table, job_id, ("REJECTED",), timeout=40)

    assert item["error"]["code"] == read_error_json(sim.s3, sim.bucket, job_id)["error"]["code"]
    assert sim.stats()["inpaint_calls"] == 0


def test_lost_v2_webhooks_are_recovered_by_the_reconciler(sim: V2Stack) -> None:
    sim.faults(drop_webhooks="all")
    job_id = new_job_id("v2-lost")
    upload_job(sim.s3, sim.bucket, job_id)

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED"), timeout=60)  # after the 10 s quiet time

    assert item["status"] == "COMPLETED"
    assert sim.stats()["inpaint_calls"] == 1


def test_duplicated_and_reordered_v2_webhooks_complete_the_job_once(sim: V2Stack) -> None:
    sim.faults(duplicate_webhooks=True, reorder_webhooks=True)
    job_id = new_job_id("v2-dup")
    upload_job(sim.s3, sim.bucket, job_id, spec=job_json("v2-dup-parent"))

    item = wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED"), timeout=40)

    assert item["status"] == "COMPLETED"
    assert sim.stats()["inpaint_calls"] == 1


def test_forged_resigned_altered_or_secretless_v2_webhooks_get_401_and_replays_change_nothing(sim: V2Stack) -> None:
    job_id = new_job_id("v2-forged")
    upload_job(sim.s3, sim.bucket, job_id)
    done = wait_for_status(sim.table, job_id, ("COMPLETED",), timeout=40)
    final = next(hook for hook in sim.webhooks_of(done["task_id"]) if json.loads(hook["body"])["status"] == "COMPLETED")
    url, body = final["url"], final["body"].encode()
    progress = json.dumps({"id": done["task_id"], "status": "processing", "progress": 10}).encode()
    signed = {"Content-Type": "application/json", "X-Webhook-Event": "progress"}

    def post(to: str, payload: bytes, headers: dict[str, str]) -> int:
        return requests.post(to, data=payload, headers=headers, timeout=10).status_code

    assert post(url, progress, signed) == 401, "no signature"
    assert post(url, progress, signed | {"X-Webhook-Signature": signature("afk_another-key", progress)}) == 401
    altered = body.replace(b'"COMPLETED"', b'"PROCESSING"', 1)
    assert post(url, altered, signed | {"X-Webhook-Signature": final["headers"]["X-Webhook-Signature"]}) == 401
    rightly_signed = signed | {"X-Webhook-Signature": signature(API_KEY, progress)}
    assert post(url.rpartition("~")[0], progress, rightly_signed) == 401, "signed, without the stage's URL secret"
    assert post(url.rpartition("~")[0] + "~" + "x" * 43, progress, rightly_signed) == 401, "a wrong URL secret"

    # Rightly signed, with the URL secret: a late progress report and a replay of the final one move nothing.
    assert post(url, progress, rightly_signed) == 200
    assert post(url, body, final["headers"]) == 200
    time.sleep(1)
    after = sim.table.get_item(Key={"job_id": job_id}, ConsistentRead=True)["Item"]
    assert (after["status"], after["updated_at"], after.get("percentage")) == (
        "COMPLETED",
        done["updated_at"],
        done.get("percentage"),
    )


@pytest.fixture(scope="module")
def account_of_two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Stack]:
    """A v2 stack of its own with MAX_ACTIVE_TASKS left empty, as the template and `make local` leave it,
    whose account allows two jobs at once: set before its first job, since the submit function reads
    the account (GET /v2/me) once per container, on its first slot check."""
    env = user_env(tmp_path_factory.mktemp("home")) | {"APIFRAME_API_VERSION": "v2", "APIFRAME_API_KEY": API_KEY}
    stack = StackProcess(tmp_path_factory.mktemp("state"), env)
    stack.start()  # in a fixture: a stack that cannot start is an error, never a failed (caught) test
    v2 = V2Stack(stack)
    v2.faults(max_concurrent_jobs=2)
    yield v2
    stack.stop()


def test_left_empty_the_slot_limit_is_the_accounts_max_concurrent_jobs(account_of_two: V2Stack) -> None:
    sim = account_of_two
    # The first tasks' webhooks are lost, so their slots stay taken until the reconciler finds them
    # (10 s quiet): every other job meets the submit function while no slot is free.
    sim.faults(drop_webhooks="all")
    jobs = [new_job_id("v2-account-slots") for _ in range(5)]
    for job_id in jobs:
        upload_job(sim.s3, sim.bucket, job_id)

    deadline, seen = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        seen = [sim.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item") or {} for job_id in jobs]
        if all(item.get("task_id") or item.get("held_reason") == "PROVIDER_SLOTS_FULL" for item in seen):
            break
        time.sleep(0.2)
    paid = [item["job_id"] for item in seen if item.get("task_id")]
    held = [item["job_id"] for item in seen if item.get("held_reason") == "PROVIDER_SLOTS_FULL"]
    assert (len(paid), len(held)) == (2, 3), "the account's two slots, not the 10 of a limit left unread"

    sim.faults(drop_webhooks=None)  # the held jobs' own tasks report as usual
    ended = [wait_for_status(sim.table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=60) for job_id in jobs]
    assert [item["status"] for item in ended] == ["COMPLETED"] * 5, ended
    stats = sim.stats()
    assert stats["inpaint_calls"] == 5
    assert stats["running_tasks_peak"] <= 2
