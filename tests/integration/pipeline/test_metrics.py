"""Business metrics (Powertools EMF on stdout): a full job emits each metric exactly once, with the
service dimension, and failures, rejections and forged webhooks are counted too."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import requests

from tests.support.builders import mask_png, new_job_id, upload_job
from tests.support.waits import settle_stack, wait_for_object, wait_for_status


def emitted_metrics(output: str) -> tuple[Counter[str], dict[str, list[float]]]:
    """Metric name -> number of EMF documents carrying it, and name -> its values."""
    documents, values = Counter[str](), dict[str, list[float]]()
    for line in output.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        document: dict[str, Any] = json.loads(line)
        directive = document["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "VaryRegion"
        assert directive["Dimensions"] == [["service"]]
        assert document["service"] == "vary-region"
        for metric in directive["Metrics"]:
            documents[metric["Name"]] += 1
            value = document[metric["Name"]]
            values.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return documents, values


def test_a_completed_job_emits_each_business_metric_exactly_once(stack, sim, s3, table, bucket, capfd):
    settle_stack(stack, sim)
    capfd.readouterr()
    job_id = new_job_id("metrics")

    upload_job(s3, bucket, job_id)
    wait_for_status(table, job_id, ("COMPLETED",))
    settle_stack(stack, sim)

    documents, values = emitted_metrics(capfd.readouterr().out)
    for name in ("JobsReceived", "JobsSubmitted", "JobsCompleted", "ImagesCopied", "BytesCopied", "JobDurationSeconds"):
        assert documents[name] == 1, f"{name} emitted {documents[name]} times"
    assert values["JobsReceived"] == [1.0] and values["JobsSubmitted"] == [1.0] and values["JobsCompleted"] == [1.0]
    assert values["ImagesCopied"] == [5.0]
    assert values["BytesCopied"][0] > 5 * 1000
    assert 0 <= values["JobDurationSeconds"][0] < 60
    for name in ("JobsRejected", "JobsFailed", "WebhooksRejected"):
        assert documents[name] == 0


def test_rejections_failures_and_forged_webhooks_are_counted(stack, sim, s3, table, bucket, capfd):
    settle_stack(stack, sim)
    capfd.readouterr()
    rejected, failed = new_job_id("metrics-rejected"), new_job_id("metrics-failed")

    upload_job(s3, bucket, rejected, mask=mask_png(box=None))
    wait_for_status(table, rejected, ("REJECTED",))
    sim.set_faults(fail_task="Content policy violation")
    upload_job(s3, bucket, failed)
    wait_for_status(table, failed, ("FAILED",))
    wait_for_object(s3, bucket, f"results/{failed}/error.json")
    forged = requests.post(
        f"{stack.info.webhook_url}/{failed}", json={"task_id": "x"}, headers={"x-webhook-secret": "wrong"}, timeout=10
    )
    settle_stack(stack, sim)

    assert forged.status_code == 401
    documents, values = emitted_metrics(capfd.readouterr().out)
    assert documents["JobsRejected"] == 1 and values["JobsRejected"] == [1.0]
    assert documents["JobsFailed"] == 1 and values["JobsFailed"] == [1.0]
    assert documents["WebhooksRejected"] == 1
    assert documents["JobsReceived"] == 2
    assert documents["JobsCompleted"] == 0
