"""Under APIFRAME v2, a generate whose answer is lost is sent again with the same Idempotency-Key, and
the stage still pays for exactly one task: the real submitter, a real job table (the module's own)
and S3 (the stack's moto), and a v2 simulator of the test's own that takes the request, charges it
and then loses its answer (a 5xx, or a connection closed before any answer).

The provider documents the key on generate; on the action endpoint it does not, so there a lost
answer leaves the job SUBMIT_AMBIGUOUS and nothing is sent again, as in v1. A claim given back (the
provider certainly took nothing) is followed by a new claim, and a new claim sends a new key.

The simulator here speaks v2 whatever the pass, so the v1 pass runs these and the v2 pass skips them
(fixed_generation); the end-to-end twin, a chain from a prompt completing through a v2 stack under a
lost answer, is in tests/e2e/test_apiframe_v2.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from vary_region.aws.job_files import JobFiles
from vary_region.core.errors import ProviderUnavailable
from vary_region.core.stages import JobStage
from vary_region.provider.api_key import api_key_reader
from vary_region.provider.apiframe_v1 import RetryPolicy
from vary_region.provider.apiframe_v2 import ApiframeV2Client
from vary_region.settings import ImageOrigin, Settings, get_settings
from vary_region.store.job_table import JobTable
from vary_region.submit.paid_call import idempotency_key
from vary_region.submit.submitter import JobSubmitter, SubmitOutcome
from vary_region.wiring import parent_reader
from vary_region_local.simulator import ApiframeSimulator

from tests.support.builders import mask_png, new_job_id, put_files
from tests.support.waits import get_job

pytestmark = pytest.mark.fixed_generation
DIRECT_INBOX = "direct-inbox/"  # not under the stack's notification prefix (inbox/)
CHAIN = {
    "imagine": {"prompt": "a lighthouse at dusk", "aspect_ratio": "3:2", "index": "2"},
    "mask": {"regions": [{"rect": [0.2, 0.2, 0.3, 0.3]}], "units": "fraction"},
}


@pytest.fixture()
def provider(stack: Any) -> Iterator[ApiframeSimulator]:
    # The stack's key: the parent reader reads it from the stack's secret.
    simulator = ApiframeSimulator(
        api_key=stack.options.api_key, step_delay=0.01, progress_steps=(50,), api_version="v2"
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture()
def settings(stack: Any, provider: ApiframeSimulator) -> Settings:
    # No webhook URL: the simulator here is the test's own, and the stack's webhook knows none of its jobs.
    return replace(
        get_settings(),
        inbox_prefix=DIRECT_INBOX,
        apiframe_api_version="v2",
        apiframe_base_url=provider.base_url,
        webhook_base_url="",
        allowed_image_origins=(ImageOrigin.parse(provider.base_url),),  # the inpaint's parent image
    )


class KeysSeen:
    """The real v2 client, with the idempotency key of each submit recorded; `refuse_first` makes the
    first submit fail before anything is sent, as an unreachable provider does."""

    def __init__(self, real: ApiframeV2Client, refuse_first: bool = False) -> None:
        self.real, self._refuse = real, refuse_first
        self.keys: list[str | None] = []

    def submit(self, request: Any, idempotency_key: str | None = None) -> str:
        self.keys.append(idempotency_key)
        if self._refuse:
            self._refuse = False
            raise ProviderUnavailable("APIFRAME unreachable; nothing sent")
        return self.real.submit(request, idempotency_key)


def _submitter(settings: Settings, store: JobTable, apiframe: Any) -> JobSubmitter:
    files = JobFiles(boto3.client("s3"), settings.jobs_bucket, DIRECT_INBOX)
    return JobSubmitter(settings, store, files, apiframe, parent_reader(settings))


def _client(settings: Settings) -> ApiframeV2Client:
    return ApiframeV2Client(
        settings.apiframe_base_url,
        api_key_reader(settings),
        read_timeout=2,
        retry=RetryPolicy(budget_seconds=settings.submit_retry_budget_seconds, base_delay=0.05),
    )


def _upload(s3: Any, bucket: str, job_id: str, document: dict[str, Any]) -> str:
    key = f"{DIRECT_INBOX}{job_id}/job.json"
    put_files(s3, bucket, [(key, json.dumps(document).encode(), "application/json")])
    return key


@pytest.mark.parametrize("lost_as", [None, 500, 502, 504], ids=["reset", "500", "502", "504"])
def test_a_generate_whose_answer_is_lost_is_sent_again_with_its_key_and_pays_for_one_task(
    settings, store, own_table, provider, s3, bucket, lost_as
):
    provider.set_faults(lose_answer_next=1, lose_answer_status=lost_as)
    client = KeysSeen(_client(settings))
    job_id = new_job_id("v2-lost-generate")

    result = _submitter(settings, store, client).handle_upload(_upload(s3, bucket, job_id, CHAIN))

    sent = provider.paid_requests
    assert [r["status"] for r in sent] == [lost_as or 0, 202], "the lost answer, then the resend's"
    assert [r["idempotency_key"] for r in sent] == client.keys * 2, "the same key, both times"
    stats = provider.stats()
    assert (stats["tasks_created"], stats["credits_spent"]) == (1, 16), "one task, charged once"
    task_id = sent[1]["job_id"]
    assert provider.task(task_id) is not None
    assert (result.outcome, result.task_id) == (SubmitOutcome.SUBMITTED, task_id)
    item = get_job(own_table, job_id) or {}
    assert (item.get("status"), item.get("task_id"), item.get("stage")) == ("SUBMITTED", task_id, "imagine")
    assert item.get("error") is None and item.get("needs_attention") is None, "not ambiguous"


def test_an_inpaint_whose_answer_is_lost_stays_ambiguous_and_is_not_sent_again(
    settings, store, own_table, provider, s3, bucket
):
    provider.set_faults(lose_answer_next=1, lose_answer_status=500)
    job_id = new_job_id("v2-lost-inpaint")
    keys = [f"{DIRECT_INBOX}{job_id}/job.json", f"{DIRECT_INBOX}{job_id}/mask.png"]
    spec = json.dumps({"parent_task_id": "upscale-of-the-test", "prompt": "a red balloon"}).encode()
    put_files(s3, bucket, [(keys[0], spec, "application/json"), (keys[1], mask_png(), "image/png")])
    client = KeysSeen(_client(settings))

    result = _submitter(settings, store, client).handle_upload(keys[1])

    assert result.outcome is SubmitOutcome.AMBIGUOUS
    assert [(r["path"], r["idempotency_key"]) for r in provider.paid_requests] == [
        ("/v2/images/midjourney/action", client.keys[0])
    ], "sent once, with its key, never again"
    item = get_job(own_table, job_id) or {}
    assert (item.get("error") or {}).get("code") == "SUBMIT_AMBIGUOUS" and item.get("needs_attention") is True
    assert provider.stats()["tasks_created"] == 1


def test_a_claim_given_back_is_followed_by_a_new_claim_with_a_new_key(settings, store, own_table, provider, s3, bucket):
    client = KeysSeen(_client(settings), refuse_first=True)
    submitter = _submitter(settings, store, client)
    job_id = new_job_id("v2-new-claim")
    key = _upload(s3, bucket, job_id, CHAIN)

    with pytest.raises(ProviderUnavailable):  # no queue to hold it in: the event is retried
        submitter.handle_upload(key)
    assert (get_job(own_table, job_id) or {}).get("submit_claim") is None, "the claim is given back"
    assert submitter.handle_upload(key).outcome is SubmitOutcome.SUBMITTED

    claim = (get_job(own_table, job_id) or {}).get("submit_claim")
    assert client.keys[1] == idempotency_key(job_id, JobStage.IMAGINE, str(claim)), "the second claim's own key"
    assert client.keys[0] != client.keys[1]
    assert [r["idempotency_key"] for r in provider.paid_requests] == [client.keys[1]]
