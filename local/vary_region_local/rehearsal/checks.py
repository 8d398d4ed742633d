"""Each path the rehearsal runs through the deployed stack, as one check that says what it saw.

The jobs start together (`start_*`) and are judged after (`check_*`), so the slow paths overlap:
the lost webhook's quiet time runs while the other jobs go through.
"""

from __future__ import annotations

import json
import time
from typing import Any

from vary_region_local.rehearsal.paths import Pipeline
from vary_region_local.rehearsal.provider import WEBHOOK_RESEND_SECONDS, answered
from vary_region_local.rehearsal.report import PathFailed

REJECTED_JOB, PLAIN_JOB, CHAIN_JOB = "rehearsal-rejected", "rehearsal-plain", "rehearsal-chain"
REQUESTED_JOB, LOST_JOB = "rehearsal-requested", "rehearsal-lost-webhook"
HELD_JOB = "rehearsal-held"
REQUESTED_DETAIL = {
    "job_id": REQUESTED_JOB,
    "parent_task_id": "demo-parent-1",
    "prompt": "a red balloon",
    "mask": {"regions": [{"rect": [0.3, 0.1, 0.4, 0.5]}], "units": "fraction"},
}
# Deployed with ReconcileQuietSeconds at its minimum (30): a job quiet for that long is checked.
QUIET_SECONDS = 30
# Deployed with HoldDelaySeconds 5 (default 30): a held job wakes up 5-7.5 s later.
HOLD_DELAY_SECONDS = 5
# Every paid call answered 429 while this holds: the submit function retries within its budget
# (SUBMIT_RETRY_BUDGET_SECONDS, 20 s), then holds the job on the submit queue (PROVIDER_UNAVAILABLE).
RATE_LIMITED_CALLS = 1000


# ---- the lost webhook: started first, recovered last --------------------------------------------
def start_lost_webhook(pipeline: Pipeline) -> None:
    # The fault holds for tasks created while it is on: only this job's task loses its final webhook.
    pipeline.provider.set_faults(drop_webhooks="final")
    try:
        pipeline.drop_job(LOST_JOB, json.loads(pipeline.example("job.json")), pipeline.example("mask.png"))
        pipeline.wait_for(LOST_JOB, lambda item: bool(item.get("task_id")), "submitted")
    finally:
        pipeline.provider.set_faults(drop_webhooks=None)


def check_lost_webhook(pipeline: Pipeline) -> str:
    item = pipeline.wait_for(LOST_JOB, lambda i: i.get("percentage") == 75, "at its last progress webhook (75 %)")
    if item.get("status") in ("COMPLETED", "FAILED", "REJECTED"):
        raise PathFailed(f"{LOST_JOB} ended {item['status']} without its final webhook: nothing was lost")
    task = pipeline.provider.task(str(item["task_id"])) or {}
    if task.get("status") != "finished":
        pipeline.wait_for(
            LOST_JOB,
            lambda _: (pipeline.provider.task(str(item["task_id"])) or {}).get("status") == "finished",
            "finished at the provider",
        )
    quiet_since = time.time() - _age_seconds(str(pipeline.job(LOST_JOB).get("updated_at", "")))
    time.sleep(max(0.0, quiet_since + QUIET_SECONDS + 1 - time.time()))
    if pipeline.job(LOST_JOB).get("status") == "COMPLETED":
        raise PathFailed(f"{LOST_JOB} COMPLETED before the reconciler ran: its final webhook was not lost")
    ran = pipeline.run_reconciler_schedule()
    result = pipeline.completed_with_results(LOST_JOB)
    return (
        f"final webhook dropped, job quiet {QUIET_SECONDS}s at 75 %; {ran['rule']} ({ran['schedule']}) target "
        f"invoked -> Fetch -> completion queue -> COMPLETED, {len(result.get('images', {}))} images in S3"
    )


def _age_seconds(timestamp: str) -> float:
    from datetime import UTC, datetime

    if not timestamp:
        return 0.0
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - parsed.astimezone(UTC)).total_seconds())


# ---- a rejected job ---------------------------------------------------------------------------------
def start_rejected(pipeline: Pipeline) -> None:
    pipeline.drop_job(REJECTED_JOB, json.loads(pipeline.example("job.json")), b"this is not a PNG")


def check_rejected(pipeline: Pipeline) -> str:
    item = pipeline.wait(REJECTED_JOB)
    code = (item.get("error") or {}).get("code")
    if item.get("status") != "REJECTED" or code != "MASK_NOT_IMAGE":
        raise PathFailed(f"{REJECTED_JOB}: {item.get('status')} {code}, not REJECTED MASK_NOT_IMAGE")
    # The submit function writes error.json just after the item says REJECTED: wait for it.
    document = pipeline.wait_for_json(f"results/{REJECTED_JOB}/error.json")
    if (document.get("error") or {}).get("code", document.get("code")) != code:
        raise PathFailed(f"results/{REJECTED_JOB}/error.json does not name {code}: {document}")
    return "inbox -> S3 notification -> submit queue -> submit function -> REJECTED MASK_NOT_IMAGE + error.json"


# ---- a plain job, a chain, a requested job ----------------------------------------------------------
def start_plain(pipeline: Pipeline) -> None:
    pipeline.drop_job(PLAIN_JOB, json.loads(pipeline.example("job.json")), pipeline.example("mask.png"))


def check_plain(pipeline: Pipeline) -> str:
    result = pipeline.completed_with_results(PLAIN_JOB)
    task_id = pipeline.job(PLAIN_JOB).get("task_id")
    sent = [w for w in pipeline.provider.webhook_log if "/_aws/execute-api/" in w["url"]]
    own = [w for w in sent if json.loads(w["body"]).get("task_id") == task_id]
    if not own or own[-1].get("answer") != 200:
        raise PathFailed(f"the final webhook of {PLAIN_JOB} was not taken by the deployed API: {own[-1:]}")
    # A refusal is an answer (4xx); no answer (a time-out, a 5xx: the emulator cold-starting a
    # function) is resent by the rehearsal's provider, and only one still unanswered after its
    # resends fails here, named as such.
    refused = [(_token_path(w), w.get("answer")) for w in sent if answered(w.get("answer")) and w["answer"] != 200]
    if refused:
        raise PathFailed(f"webhooks refused by the deployed API: {refused}")
    # Judged once the provider gave up on one: an attempt on its way or between resends is not.
    unanswered = [(_token_path(w), w.get("answer"), w.get("attempt")) for w in sent if w.get("gave_up")]
    if unanswered:
        raise PathFailed(f"webhooks still unanswered after {WEBHOOK_RESEND_SECONDS:.0f}s of resends: {unanswered}")
    taken = sum(w.get("answer") == 200 for w in sent)
    resent = sum(int(w.get("attempt", 1)) > 1 for w in sent)
    return (
        f"COMPLETED by its final webhook through the deployed HTTP API, {len(result.get('images', {}))} images "
        f"copied by the completion function; {taken} webhooks answered 200 "
        f"({resent} resends after no answer during cold starts)"
    )


def _token_path(webhook: dict[str, Any]) -> str:
    return str(webhook["url"]).rsplit("/", 1)[0]


def start_chain(pipeline: Pipeline) -> None:
    pipeline.put(f"inbox/{CHAIN_JOB}/job.json", pipeline.example("job-from-prompt.json"))


def check_chain(pipeline: Pipeline) -> str:
    result = pipeline.completed_with_results(CHAIN_JOB)
    stages = [task.get("stage") for task in result.get("tasks", [])]
    if stages != ["imagine", "upscale", "inpaint"]:
        raise PathFailed(f"{CHAIN_JOB} COMPLETED through stages {stages}, not imagine, upscale, inpaint")
    took = (result.get("timings") or {}).get("duration_seconds")
    return f"prompt + region -> imagine -> upscale-1x -> inpaint (region at the upscale's size) -> COMPLETED in {took}s"


def start_requested(pipeline: Pipeline) -> None:
    put_request(pipeline, REQUESTED_DETAIL)


def put_request(pipeline: Pipeline, detail: dict[str, Any]) -> None:
    answer = pipeline.events.put_events(
        Entries=[
            {
                "Source": "com.example.rehearsal",
                "DetailType": "Vary Region Job Requested",
                "EventBusName": pipeline.stack.outputs["EventBusName"],
                "Detail": json.dumps(detail),
            }
        ]
    )
    if answer.get("FailedEntryCount"):
        raise PathFailed(f"the bus refused the request: {answer['Entries']}")


def check_requested(pipeline: Pipeline) -> str:
    pipeline.completed_with_results(REQUESTED_JOB)
    if f"{REQUESTED_JOB}.json" not in _inbox(pipeline):
        raise PathFailed(f"the requested job's file inbox/{REQUESTED_JOB}.json was not written")
    return "Vary Region Job Requested -> the deployed rule -> submit queue -> inbox/<id>.json -> COMPLETED"


def _inbox(pipeline: Pipeline) -> list[str]:
    listed = pipeline.s3.list_objects_v2(Bucket=pipeline.bucket, Prefix="inbox/").get("Contents", [])
    return [o["Key"].removeprefix("inbox/") for o in listed]


# ---- a forged webhook -------------------------------------------------------------------------------
def check_forged_webhook(pipeline: Pipeline) -> str:
    """A real webhook of the plain job, replayed with another secret, and one to a made-up token."""
    before = pipeline.job(PLAIN_JOB)
    if before.get("status") not in ("COMPLETED", "FAILED", "REJECTED"):
        raise PathFailed(
            f"{PLAIN_JOB} is {before.get('status')}: a job still moving cannot show a forgery changed nothing"
        )
    sent = [w for w in pipeline.provider.webhook_log if "/_aws/execute-api/" in w["url"]]
    real = next((w for w in sent if json.loads(w["body"]).get("task_id") == before.get("task_id")), None)
    if real is None:
        raise PathFailed(f"no webhook of {PLAIN_JOB} to replay")
    body = json.dumps({**json.loads(real["body"]), "status": "failed", "message": "forged"})
    forged = pipeline.post_webhook(real["url"], {**real["headers"], "x-webhook-secret": "forged"}, body)
    made_up = pipeline.post_webhook(real["url"].rsplit("/", 1)[0] + "/not-a-token", real["headers"], body)
    after = pipeline.job(PLAIN_JOB)
    if forged.status_code != 401 or made_up.status_code != 401:
        raise PathFailed(f"forged webhooks answered {forged.status_code} and {made_up.status_code}, not 401")
    if _fields(after) != _fields(before):
        raise PathFailed(f"a forged webhook changed {PLAIN_JOB}: {_fields(before)} -> {_fields(after)}")
    return "wrong secret and made-up token: 401 from the deployed route and function, the job untouched"


def _fields(item: dict[str, Any]) -> tuple[Any, ...]:
    return item.get("status"), item.get("updated_at"), item.get("error")


# ---- the state changes on the bus ------------------------------------------------------------------
def check_state_changes(pipeline: Pipeline) -> str:
    expected = {REJECTED_JOB: "REJECTED", PLAIN_JOB: "COMPLETED", CHAIN_JOB: "COMPLETED", REQUESTED_JOB: "COMPLETED"}
    expected |= {HELD_JOB: "COMPLETED", LOST_JOB: "COMPLETED"}
    deadline = time.monotonic() + 30  # the publisher reads the stream a moment behind the table
    statuses: dict[str, set[str]] = {}
    codes: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for detail in pipeline.state_changes():
            statuses.setdefault(str(detail.get("job_id")), set()).add(str(detail.get("status")))
            codes[f"{detail.get('job_id')} {detail.get('status')}"] = (detail.get("error") or {}).get("code")
        if all(final in statuses.get(job, set()) for job, final in expected.items()):
            break
    missing = {job: final for job, final in expected.items() if final not in statuses.get(job, set())}
    if missing:
        raise PathFailed(f"no state-change event for {missing}; events seen: {statuses}")
    code = codes.get(f"{REJECTED_JOB} REJECTED")
    if code != "MASK_NOT_IMAGE":
        raise PathFailed(f"the REJECTED event of {REJECTED_JOB} names {code}, not MASK_NOT_IMAGE")
    count = sum(map(len, statuses.values()))
    return f"{count} statuses on the bus via the table's stream and the publisher; REJECTED with {code}"


# ---- a job held on the submit queue, and its wake-up ------------------------------------------------
def start_held(pipeline: Pipeline, job_id: str = HELD_JOB) -> None:
    """APIFRAME answers every paid call 429 until the job is held (started when no other job is
    paying: the fault is the provider's, for every job)."""
    pipeline.provider.set_faults(rate_limit_next=RATE_LIMITED_CALLS)
    pipeline.drop_job(job_id, json.loads(pipeline.example("job.json")), pipeline.example("mask.png"))


def check_held(pipeline: Pipeline) -> str:
    try:
        held = pipeline.wait_for(HELD_JOB, lambda i: bool(i.get("held_reason")), "held", timeout=60)
    finally:
        refused = RATE_LIMITED_CALLS - pipeline.provider.faults.rate_limit_next
        pipeline.provider.set_faults(rate_limit_next=0)
    if held.get("held_reason") != "PROVIDER_UNAVAILABLE" or held.get("status") in ("COMPLETED", "FAILED", "REJECTED"):
        raise PathFailed(
            f"{HELD_JOB}: {held.get('status')} held for {held.get('held_reason')}, not PROVIDER_UNAVAILABLE"
        )
    pipeline.completed_with_results(HELD_JOB)
    return (
        f"{refused} paid calls answered 429 -> held PROVIDER_UNAVAILABLE (back on the submit queue, delayed "
        f"{HOLD_DELAY_SECONDS}s+) -> woke up, APIFRAME answering again -> COMPLETED"
    )


# ---- a missing error.json repaired by the next delivery --------------------------------------------
def start_repair(pipeline: Pipeline, job_id: str = REJECTED_JOB) -> None:
    """error.json of a REJECTED job deleted (as if its write had failed after the item said REJECTED),
    then the job's file delivered again: the same object put again, so S3 notifies once more."""
    pipeline.s3.delete_object(Bucket=pipeline.bucket, Key=f"results/{job_id}/error.json")
    pipeline.drop_job(job_id, json.loads(pipeline.example("job.json")))


def check_repair(pipeline: Pipeline) -> str:
    start_repair(pipeline)
    document = pipeline.wait_for_json(f"results/{REJECTED_JOB}/error.json", timeout=60)
    item = pipeline.job(REJECTED_JOB)
    code = (item.get("error") or {}).get("code")
    if item.get("status") != "REJECTED" or (document.get("error") or {}).get("code") != code:
        raise PathFailed(f"{REJECTED_JOB} after the repair: item {item.get('status')} {code}, error.json {document}")
    return f"error.json deleted, the job file delivered again -> already REJECTED: error.json rewritten ({code})"
