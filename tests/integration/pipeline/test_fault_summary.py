"""A mixed batch of jobs under every kind of fault at once, ending in one summary line:

    fault summary: jobs=N submissions=N duplicates_injected=N forged_webhooks_rejected=N faults_survived=N jobs_lost=0

Run with `-s` to see it. `submissions` counts the tasks the provider created (each one paid);
`duplicates_injected` counts duplicate S3 events sent by the test plus webhooks the provider
delivered twice; `faults_survived` counts every injected fault event (duplicate, reordered, dropped
or forged webhook, duplicate S3 event, 429 answer, failed copy attempt, failed task) on jobs that
still ended in their expected state; `jobs_lost` counts jobs that did not.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boto3
from vary_region_local.simulator import SimulatorFaults

from tests.support.builders import (
    job_json,
    new_job_id,
    post_webhook,
    progress_body,
    s3_put_event,
    secret_of,
    upload_job,
)
from tests.support.recorders import ProviderRecorder, WebhookRecorder
from tests.support.waits import (
    final_body,
    get_job,
    job_item,
    keys_under,
    read_json,
    settle_stack,
    wait_for_queue_drained,
    wait_for_sim_task,
    wait_for_task_id,
    wait_until,
)

RESULT_KEYS = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]
RATE_LIMITED_ANSWERS = 3  # more than the submit call's own retry budget absorbs: SQS redelivers too


@dataclass
class Planned:
    job_id: str
    expected: str = "COMPLETED"
    faults: Counter[str] = field(default_factory=Counter)
    task_id: str = ""
    secret: str = ""


def set_only_faults(sim: Any, **faults: Any) -> None:
    """Set exactly these faults (all others off) without resetting the simulator's statistics."""
    defaults = {f.name: f.default for f in dataclasses.fields(SimulatorFaults)}
    sim.set_faults(**(defaults | faults))


def submit_group(
    s3: Any,
    bucket: str,
    table: Any,
    sim: Any,
    label: str,
    count: int,
    faults: dict[str, Any],
    expected: str = "COMPLETED",
) -> list[Planned]:
    """Submit `count` jobs while `faults` are set (a task snapshots the faults when it is created)."""
    set_only_faults(sim, **faults)
    jobs = [Planned(new_job_id(f"mix-{label}"), expected) for _ in range(count)]
    for job in jobs:
        upload_job(s3, bucket, job.job_id, spec=job_json(metadata={"batch": "fault-summary", "group": label}))
    for job in jobs:
        job.task_id = wait_for_task_id(table, job.job_id, timeout=30)["task_id"]
        secret = secret_of(sim.task(job.task_id))
        assert secret, "the simulator must have received a webhook secret"
        job.secret = secret
    return jobs


def job_outcome_ok(s3: Any, bucket: str, table: Any, job: Planned) -> bool:
    item = get_job(table, job.job_id)
    if item is None or item["status"] != job.expected or item.get("task_id") != job.task_id:
        return False
    keys = keys_under(s3, bucket, f"results/{job.job_id}/")
    if job.expected == "COMPLETED":
        return (
            keys == [f"results/{job.job_id}/{name}" for name in RESULT_KEYS]
            and read_json(s3, bucket, f"results/{job.job_id}/result.json")["task_id"] == job.task_id
        )
    return keys == [f"results/{job.job_id}/error.json"]


def test_given_mixed_batch_under_faults_then_no_job_is_lost_and_each_is_paid_once(
    stack, sim, s3, table, bucket, monkeypatch
):
    settle_stack(stack, sim)  # earlier tests' queued events must not take this batch's faults
    provider = ProviderRecorder.install(sim, monkeypatch)
    webhook_answers = WebhookRecorder.install(stack, monkeypatch)
    webhooks_per_task = len(sim.progress_steps) + 1
    sqs = boto3.client("sqs")
    duplicates_injected = 0
    jobs: list[Planned] = []

    # -- submissions, one fault group at a time ---------------------------------------------------
    plain = submit_group(s3, bucket, table, sim, "plain", 2, {})
    for job in plain:  # S3 delivers at least once: the same notifications again, for both files
        for name in ("job.json", "mask.png"):
            sqs.send_message(
                QueueUrl=stack.info.queue_url,
                MessageBody=json.dumps(s3_put_event(bucket, f"inbox/{job.job_id}/{name}")),
            )
            job.faults["duplicate_s3_event"] += 1
            duplicates_injected += 1
    jobs += plain

    for job in (dup := submit_group(s3, bucket, table, sim, "dup", 2, {"duplicate_webhooks": True})):
        job.faults["duplicated_webhook"] += webhooks_per_task
        duplicates_injected += webhooks_per_task
    jobs += dup
    for job in (reordered := submit_group(s3, bucket, table, sim, "reorder", 2, {"reorder_webhooks": True})):
        job.faults["reordered_webhook"] += 1
    jobs += reordered
    for job in (lost_final := submit_group(s3, bucket, table, sim, "lostfinal", 1, {"drop_webhooks": "final"})):
        job.faults["dropped_webhook"] += 1
    jobs += lost_final
    for job in (lost_all := submit_group(s3, bucket, table, sim, "lostall", 1, {"drop_webhooks": "all"})):
        job.faults["dropped_webhook"] += webhooks_per_task
    jobs += lost_all
    failing = submit_group(
        s3, bucket, table, sim, "fail", 1, {"fail_task": "Content policy violation"}, expected="FAILED"
    )
    failing[0].faults["failed_task"] += 1
    jobs += failing
    rate_limited = submit_group(s3, bucket, table, sim, "429", 1, {"rate_limit_next": RATE_LIMITED_ANSWERS})
    rate_limited[0].faults["rate_limited_submit"] += provider.inpaint_calls(rate_limited[0].job_id, status=429)
    assert provider.inpaint_calls(rate_limited[0].job_id, status=429) == RATE_LIMITED_ANSWERS
    jobs += rate_limited
    broken_host = submit_group(s3, bucket, table, sim, "img500", 1, {"drop_webhooks": "final"})
    jobs += broken_host
    target = submit_group(s3, bucket, table, sim, "forged", 1, {"drop_webhooks": "all"})[0]
    target.faults["dropped_webhook"] += webhooks_per_task
    jobs.append(target)
    set_only_faults(sim)

    # -- forged webhooks against a job in flight --------------------------------------------------
    wait_for_sim_task(sim, target.task_id)
    before = get_job(table, target.job_id)
    forged = [
        (target.job_id, None, final_body(sim, target.task_id)),  # no secret
        (target.job_id, "guessed-" + "0" * 35, final_body(sim, target.task_id)),  # wrong secret
        (target.job_id, plain[0].secret, final_body(sim, target.task_id)),  # another job's secret
        (target.job_id, target.secret, progress_body(plain[0].task_id, "99")),  # right secret, another task
        (target.job_id, target.secret, final_body(sim, plain[0].task_id)),  # right secret, another result
    ]
    forged_rejected = sum(
        post_webhook(stack, job_id, body, secret=secret).status_code == 401 for job_id, secret, body in forged
    )
    assert get_job(table, target.job_id) == before, "forged webhooks changed the job"
    target.faults["forged_webhook"] += forged_rejected

    # -- the image host fails during one final copy, then recovers -------------------------------------
    assert sim.wait_idle(timeout=30)  # every webhook the provider meant to send has been answered
    victim = broken_host[0]
    set_only_faults(sim, image_status=500)
    assert post_webhook(stack, victim.job_id, final_body(sim, victim.task_id), secret=victim.secret).status_code == 200
    # The completion worker meets the broken host (and queues itself a retry) before the host recovers.
    wait_until(lambda: int(job_item(table, victim.job_id).get("copy_failures", 0)) >= 1, message="a failed copy")
    set_only_faults(sim)
    victim.faults["failed_copy_attempt"] += int(job_item(table, victim.job_id)["copy_failures"])

    # -- the reconciler brings home whatever is still open ------------------------------------------------
    def all_finished() -> bool:
        stack.run_reconciler()
        return all(job_item(table, job.job_id)["status"] in ("COMPLETED", "FAILED", "REJECTED") for job in jobs)

    wait_until(all_finished, timeout=20, interval=0.25, message="every job finished")
    wait_for_queue_drained(stack, timeout=20, include_delayed=True)  # duplicate S3 events handled too
    assert sim.wait_idle(timeout=10)

    # -- the summary ---------------------------------------------------------------------------------------
    lost = [job.job_id for job in jobs if not job_outcome_ok(s3, bucket, table, job)]
    paid = {job.job_id: provider.inpaint_calls(job.job_id, status=200) for job in jobs}
    submissions = sum(paid.values())
    faults_survived = sum(sum(job.faults.values()) for job in jobs if job.job_id not in lost)
    print(
        f"\nfault summary: jobs={len(jobs)} submissions={submissions} duplicates_injected={duplicates_injected} "
        f"forged_webhooks_rejected={forged_rejected} faults_survived={faults_survived} jobs_lost={len(lost)}"
    )

    assert lost == [], f"jobs not in their expected final state: {lost}"
    assert submissions == len(jobs), f"one paid submission per job, whatever was redelivered: {paid}"
    assert set(paid.values()) == {1}
    assert len({job.task_id for job in jobs}) == len(jobs)
    assert forged_rejected == len(forged)
    # The provider's own deliveries were all answered 2xx, duplicates and late ones included (the test's
    # forged and broken-host webhooks went to `target` and `victim`).
    for job in jobs:
        if job not in (target, victim):
            assert set(webhook_answers.statuses(job.job_id)) <= {200}, job.job_id
