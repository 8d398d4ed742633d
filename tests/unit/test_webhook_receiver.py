"""Which job a webhook's URL names, as the receiver looks it up (the store is an in-memory fake)."""

from __future__ import annotations

from typing import Any

import pytest
from vary_region.webhook import WebhookDelivery, WebhookReceiver, WebhookUnauthorized


class _Store:
    """Knows no job: records which ids were read."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    def get(self, job_id: str) -> Any:
        self.reads.append(job_id)
        return None


def _receiver(store: _Store) -> WebhookReceiver:
    return WebhookReceiver(store, completer=None)  # type: ignore[arg-type]  # never reached: no job is found


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
