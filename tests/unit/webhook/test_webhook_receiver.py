"""Which job a webhook's URL names, as the receiver looks it up (the store is an in-memory fake).

URLs carry an opaque token (webhook_token); URLs made before tokens carried the job id itself,
percent-encoded, and are still understood."""

from __future__ import annotations

from typing import Any

import pytest
from vary_region.provider.webhook_token import job_id_from_token, webhook_token
from vary_region.webhook.receiver import WebhookDelivery, WebhookReceiver, WebhookUnauthorized


class _Store:
    """Knows no job: records which ids were read."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def get(self, job_id: str) -> Any:
        self.reads.append(job_id)
        return None


def _receiver(store: _Store) -> WebhookReceiver:
    return WebhookReceiver(store, queue=None)  # type: ignore[arg-type]  # never reached: no job is found


@pytest.mark.parametrize(
    "path_job_id, reads",
    [
        ("plain-id", ["plain-id"]),
        ("a%2541%20b", ["a%2541%20b", "a%41 b"]),  # as delivered, then decoded once
        ("a%41", ["a%41", "aA"]),
        ("x" * 201, []),  # longer than any job id: nothing is read
        ("ok%0Aline", ["ok%0Aline"]),  # decodes to a control character: not a job id
    ],
)
def test_given_a_url_job_id_then_the_store_is_read_as_delivered_then_decoded(path_job_id, reads):
    store = _Store()

    with pytest.raises(WebhookUnauthorized, match="unknown job"):
        _receiver(store).receive(WebhookDelivery(path_job_id, {}, b"{}"))

    assert store.reads == reads


@pytest.mark.parametrize("job_id", ["plain", "with space", "q?x#y", "100%41", "ünï-😀", "x" * 200])
def test_given_any_job_id_then_its_token_is_url_safe_and_names_it_first(job_id):
    token = webhook_token(job_id)
    store = _Store()

    with pytest.raises(WebhookUnauthorized):
        _receiver(store).receive(WebhookDelivery(token, {}, b"{}"))

    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert job_id_from_token(token) == job_id
    assert store.reads[0] == job_id


@pytest.mark.parametrize("token", ["j-", "j-!!", "j-YQ", "j-YQ=", "j-AAo", "plain"])
def test_given_a_segment_that_is_no_canonical_token_then_it_names_no_job(token):
    # "j-YQ" is "a"; "j-YQ=" would be a second spelling of it; "j-AAo" decodes to control characters.
    assert job_id_from_token(token) == ("a" if token == "j-YQ" else None)


# ---- one URL per stage of a chained job ------------------------------------------------------------
def test_given_a_stage_when_its_token_is_made_then_it_names_the_job_and_the_stage_and_nothing_else():
    from vary_region.provider.webhook_token import parse_webhook_token

    assert parse_webhook_token(webhook_token("job 1", "upscale")) == ("job 1", "upscale")
    assert parse_webhook_token(webhook_token("job 1")) == ("job 1", "inpaint")
    assert webhook_token("job 1", "inpaint") == webhook_token("job 1"), "a plain job's URL is unchanged"
    assert parse_webhook_token(webhook_token("job 1") + ".inpaint") is None, "one spelling per stage"
