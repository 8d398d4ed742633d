"""The provider port: all the domain asks of APIFRAME, whichever generation the stack speaks.

Two adapters stand behind it: `apiframe.ApiframeClient` (v1, `api.apiframe.pro`) and
`apiframe_v2.ApiframeV2Client` (v2, `api.apiframe.ai`), with their webhook verifiers in
`webhook_auth`. `wiring` picks them from `APIFRAME_API_VERSION`; no domain module knows which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from vary_region.provider.stage_requests import StageRequest
from vary_region.provider.task_result import TaskResult

API_VERSIONS = ("v1", "v2")


class Provider(Protocol):
    def submit(self, request: StageRequest, idempotency_key: str | None = None) -> str:
        """Start one paid task; its id. Raises ProviderRejected, ProviderUnavailable,
        SubmissionAmbiguous or RequestNotSent, and never resends a request that may have landed,
        unless the provider documents that the request's idempotency key makes a resend harmless.

        idempotency_key: one per job, stage and claim (v2 sends it with every paid call and requires
        it; v1 documents no such key and sends none)."""
        ...

    def fetch(self, task_id: str, deadline: float | None = None) -> TaskResult: ...

    def fetch_many(self, task_ids: list[str], deadline: float | None = None) -> list[TaskResult]:
        """Up to 20 tasks; unknown ids are left out."""
        ...

    def account_credits(self) -> int | None: ...


class ProviderWebhooks(Protocol):
    def verify(self, headers: Mapping[str, str], body: bytes, url_secret: str | None, secret_hash: str) -> bool:
        """Whether a delivery is the provider's, for the job stage whose webhook secret hashes to
        `secret_hash`; decided on the raw body, before anything parses it."""
        ...

    def parse(self, payload: Any) -> TaskResult:
        """The task a webhook body reports (MalformedTaskPayload if it reports none)."""
        ...
