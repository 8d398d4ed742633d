"""APIFRAME v2 behind the provider port: its wire form, its job shapes, its errors and its signed
webhooks, mapped onto the pipeline's requests, TaskResult and error codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from vary_region.core.errors import ProviderRejected, SubmissionAmbiguous
from vary_region.provider.apiframe_v1 import RetryPolicy
from vary_region.provider.apiframe_v2 import ApiframeV2Client, parse_v2_job, v2_request
from vary_region.provider.stage_requests import ImagineRequest, InpaintRequest, UpscaleRequest
from vary_region.provider.task_result import MalformedTaskPayload, TaskState
from vary_region.provider.webhook_auth import SignedWebhookVerifier, hash_webhook_secret, webhook_signature
from vary_region.provider.webhook_token import split_url_secret, webhook_token

from tests.support.waits import not_raising

KEY = "afk_test-key"
SECRET = "s" * 43
KEY_OF_CLAIM = "4b1c9a5e-0d7f-5b8e-9a33-1f2e3d4c5b6a"  # an idempotency key, as paid_call.idempotency_key makes


def test_each_stage_request_takes_v2s_wire_form_with_the_secret_in_the_url() -> None:
    url = "https://hooks.example/webhook/j-abc"
    assert v2_request(InpaintRequest("up-1", "data:image/png;base64,AA", "a cat", url, SECRET)) == (
        "/v2/images/midjourney/action",
        {
            "action": "inpaint",
            "parentJobId": "up-1",
            "mask": "data:image/png;base64,AA",
            "prompt": "a cat",
            "webhookUrl": f"{url}~{SECRET}",
        },
    )
    assert v2_request(UpscaleRequest("grid-1", "3", None, None)) == (
        "/v2/images/midjourney/action",
        {"action": "upsample", "parentJobId": "grid-1", "index": 3},
    )
    path, body = v2_request(ImagineRequest("a lighthouse", "16:9", url, SECRET))
    assert path == "/v2/images/generate"
    assert body == {
        "prompt": "a lighthouse",
        "model": "midjourney",
        "midjourneyParams": {"aspect_ratio": "16:9"},
        "webhookUrl": f"{url}~{SECRET}",
    }
    assert "webhook_secret" not in json.dumps(body)


@pytest.mark.parametrize(
    ("payload", "state", "images", "image_url", "grid"),
    [
        ({"id": "j1", "status": "queued"}, TaskState.RUNNING, (), None, None),
        ({"id": "j1", "status": "processing", "progress": "40"}, TaskState.RUNNING, (), None, None),
        (
            {"id": "j1", "status": "completed", "result": {"images": ["a", "b", "c", "d"], "gridUrl": "g"}},
            TaskState.FINISHED,
            ("a", "b", "c", "d"),
            None,
            "g",
        ),
        ({"id": "j1", "status": "completed", "result": {"images": ["u"]}}, TaskState.FINISHED, ("u",), "u", None),
        ({"id": "j1", "status": "failed", "error": {"message": "nope"}}, TaskState.FAILED, (), None, None),
        (
            {"data": {"id": "j1", "status": "COMPLETED", "result": {"images": ["u"]}}},
            TaskState.FINISHED,
            ("u",),
            "u",
            None,
        ),
    ],
)
def test_v2_jobs_read_into_task_results(
    payload: dict[str, Any], state: TaskState, images: tuple[str, ...], image_url: str | None, grid: str | None
) -> None:
    result = parse_v2_job(payload)
    assert (result.task_id, result.state, result.image_urls, result.image_url, result.grid_url) == (
        "j1",
        state,
        images,
        image_url,
        grid,
    )


def test_v2_action_names_become_the_pipelines_task_types_and_failures_keep_their_message() -> None:
    assert parse_v2_job({"id": "j", "action": "upsample"}).task_type == "upscale"
    assert parse_v2_job({"id": "j", "action": "generate"}).task_type == "imagine"
    assert parse_v2_job({"id": "j", "status": "failed", "error": {"message": "banned"}}).error_message == "banned"
    assert parse_v2_job({"id": "j", "status": "processing", "progress": 55.5}).percentage == 55
    with pytest.raises(MalformedTaskPayload):
        parse_v2_job({"status": "completed"})


class _Answer:
    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.status_code, self._payload, self.headers = status, payload, headers or {}

    def json(self) -> Any:
        return self._payload


class _Session(requests.Session):
    def __init__(self, *answers: _Answer | Exception) -> None:
        super().__init__()
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # an _Answer
        assert not args and isinstance(url, str), "the client passes a str url and keywords only"
        self.calls.append((method, url, kwargs))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(*answers: _Answer | Exception) -> tuple[ApiframeV2Client, _Session]:
    session = _Session(*answers)
    client = ApiframeV2Client(
        "https://api.apiframe.ai",
        lambda: KEY,
        session=session,
        retry=RetryPolicy(budget_seconds=5),
        sleep=lambda s: None,
    )
    return client, session


def test_the_key_goes_in_x_api_key_and_the_new_job_id_is_read() -> None:
    client, session = _client(_Answer(200, {"jobId": "job-9", "status": "queued"}))
    assert client.submit(UpscaleRequest("grid-1", "1", None, None), KEY_OF_CLAIM) == "job-9"
    method, url, kwargs = session.calls[0]
    assert (method, url) == ("POST", "https://api.apiframe.ai/v2/images/midjourney/action")
    assert kwargs["headers"]["X-API-Key"] == KEY and "Authorization" not in kwargs["headers"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (402, "PROVIDER_CREDITS_INSUFFICIENT"),
        (409, "PARENT_TOO_OLD"),
        (400, "PROVIDER_REJECTED"),
        (403, "PROVIDER_REJECTED"),
    ],
)
def test_typed_refusals_get_their_codes_and_are_never_resent(status: int, code: str) -> None:
    client, session = _client(_Answer(status, {"error": {"code": "x", "message": "refused here"}}))
    with pytest.raises(ProviderRejected) as refused:
        client.submit(UpscaleRequest("grid-1", "1", None, None), KEY_OF_CLAIM)
    assert (refused.value.code, refused.value.message, len(session.calls)) == (code, "refused here", 1)


def test_a_429_is_retried_after_its_retry_after_and_a_500_is_ambiguous() -> None:
    client, session = _client(_Answer(429, {}, {"Retry-After": "1"}), _Answer(200, {"id": "job-2"}))
    assert client.submit(UpscaleRequest("grid-1", "1", None, None), KEY_OF_CLAIM) == "job-2"
    assert len(session.calls) == 2
    client, session = _client(_Answer(500, {}))
    with pytest.raises(SubmissionAmbiguous):
        client.submit(UpscaleRequest("grid-1", "1", None, None), KEY_OF_CLAIM)
    assert len(session.calls) == 1


def test_the_account_reads_team_credits_and_max_concurrent_jobs() -> None:
    client, session = _client(_Answer(200, {"team": {"credits": "120", "maxConcurrentJobs": 12}}))
    assert client.account_credits() == 120
    client, session = _client(_Answer(200, {"team": {"credits": 1, "maxConcurrentJobs": 12}}))
    assert client.max_concurrent_jobs() == 12
    assert session.calls[0][1] == "https://api.apiframe.ai/v2/me"


def test_fetch_many_reads_each_job_and_leaves_unknown_ones_out() -> None:
    client, session = _client(
        _Answer(200, {"id": "a", "status": "queued"}), _Answer(404, {}), _Answer(200, {"id": "c", "status": "queued"})
    )
    assert [task.task_id for task in client.fetch_many(["a", "b", "c"])] == ["a", "c"]
    assert [call[1].rsplit("/", 1)[-1] for call in session.calls] == ["a", "b", "c"]


BODY = b'{"id": "job-1", "status": "completed"}'
verifier = SignedWebhookVerifier(lambda: KEY)
SIGNED = {"X-Webhook-Signature": webhook_signature(KEY, BODY)}


def test_a_signed_webhook_with_the_stage_secret_in_its_url_is_accepted() -> None:
    assert verifier.verify(SIGNED, BODY, SECRET, hash_webhook_secret(SECRET)) is True
    assert verifier.verify(
        {"x-webhook-signature": SIGNED["X-Webhook-Signature"].upper()}, BODY, SECRET, hash_webhook_secret(SECRET)
    )


@pytest.mark.parametrize(
    ("headers", "body", "url_secret"),
    [
        ({}, BODY, SECRET),  # no signature
        ({"X-Webhook-Signature": webhook_signature("afk_other", BODY)}, BODY, SECRET),  # another key
        (SIGNED, BODY + b" ", SECRET),  # the body altered after signing
        (SIGNED, BODY, None),  # signed, but without the stage's URL secret
        (SIGNED, BODY, "t" * 43),  # signed, with another secret
        ({"X-Webhook-Signature": "sha256=é"}, BODY, SECRET),  # not even ASCII
    ],
)
def test_anything_but_both_factors_is_refused(headers: dict[str, str], body: bytes, url_secret: str | None) -> None:
    assert verifier.verify(headers, body, url_secret, hash_webhook_secret(SECRET)) is False


# Known vectors for KEY and BODY, computed once with openssl, not with the code under test:
#   D=$(printf %s afk_test-key | openssl dgst -sha256 -r | cut -d' ' -f1)
#   digest bytes as key: printf %s "$BODY" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$D [-binary | base64]
#   hex string as key:   printf %s "$BODY" | openssl dgst -sha256 -hmac "$D" [-binary | base64]
BYTES_KEY_HEX = "427aeaccc94a77b4728682969e8c2c5aeef3e240716c47608efcb28c734a456c"
BYTES_KEY_B64 = "QnrqzMlKd7RyhoKWnowsWu7z4kBxbEdgjvyyjHNKRWw="
HEX_KEY_HEX = "fefa85471acbf847c86f45454944bc535faff7b03d5dde9259b65b80e54a5252"
HEX_KEY_B64 = "/vqFRxrL+EfIb0VFSUS8U1+v97A9Xd6SWbZbgOVKUlI="
RAW_KEY_HEX = "555d9dd6579ede05dfc7215cf7a90655d710da0f57ccbb3c7b8368973534e69a"  # HMAC keyed with the raw key
OTHER_KEY_HEX = "6ccf7bb0417c64a60399d4881e7f63e2eb4e2dcaa8e20f99f4ea7635366fb795"  # "afk_other", digest bytes
ACCEPTED_FORMS = {
    "digest bytes, hex": BYTES_KEY_HEX,
    "digest bytes, sha256= hex": "sha256=" + BYTES_KEY_HEX,
    "digest bytes, base64": BYTES_KEY_B64,
    "digest bytes, sha256= base64": "sha256=" + BYTES_KEY_B64,
    "hex digest, hex": HEX_KEY_HEX,
    "hex digest, sha256= hex": "sha256=" + HEX_KEY_HEX,
    "hex digest, base64": HEX_KEY_B64,
    "hex digest, sha256= base64": "sha256=" + HEX_KEY_B64,
}


@pytest.mark.parametrize("form", sorted(ACCEPTED_FORMS))
def test_each_undocumented_form_of_the_signature_verifies_with_the_real_key(form: str) -> None:
    headers = {"X-Webhook-Signature": ACCEPTED_FORMS[form]}
    assert verifier.verify(headers, BODY, SECRET, hash_webhook_secret(SECRET)) is True
    # The same header never verifies another body, nor the same body under another key.
    assert verifier.verify(headers, BODY + b" ", SECRET, hash_webhook_secret(SECRET)) is False
    other = SignedWebhookVerifier(lambda: "afk_other")
    assert other.verify(headers, BODY, SECRET, hash_webhook_secret(SECRET)) is False


def test_the_simulators_form_is_one_of_the_accepted_ones() -> None:
    assert webhook_signature(KEY, BODY) == "sha256=" + BYTES_KEY_HEX


@pytest.mark.parametrize(
    "header",
    [
        "",
        "sha256=",
        "sha256",
        BYTES_KEY_HEX[:-1],  # truncated
        BYTES_KEY_HEX[:32],  # half a MAC
        BYTES_KEY_HEX + "00",  # too long
        BYTES_KEY_B64[:-1],  # base64 without its padding
        BYTES_KEY_B64.rstrip("=") + "A",  # 44 characters, but not padded base64
        "sha256=sha256=" + BYTES_KEY_HEX,  # the prefix twice
        "sha1=" + BYTES_KEY_HEX,  # another algorithm's name
        "g" * 64,  # not hex
        "0" * 64,
        "A" * 43 + "=",
        RAW_KEY_HEX,  # keyed with the raw API key: not a documented reading
        "sha256=" + OTHER_KEY_HEX,  # another account's key
        HEX_KEY_B64.replace("+", "-").replace("/", "_"),  # URL-safe base64 is not one of the forms
    ],
)
def test_a_garbled_truncated_or_foreign_signature_is_refused(header: str) -> None:
    assert verifier.verify({"X-Webhook-Signature": header}, BODY, SECRET, hash_webhook_secret(SECRET)) is False


def test_the_url_secret_is_split_from_a_token_only() -> None:
    token = webhook_token("job-1", "upscale")
    assert split_url_secret(f"{token}~{SECRET}") == (token, SECRET)
    assert split_url_secret(token) == (token, None)
    assert split_url_secret("a~b") == ("a~b", None)  # a URL made before tokens: a job id may hold "~"


@pytest.mark.parametrize("status", [302, 501, 520, 524])
def test_an_uncertain_answer_to_a_paid_call_is_ambiguous_never_a_refusal_and_redirects_are_not_followed(
    status: int,
) -> None:
    client, session = _client(_Answer(status, {}, {"Location": "http://elsewhere.example/"}))
    with not_raising(ProviderRejected), pytest.raises(SubmissionAmbiguous):
        client.submit(InpaintRequest("up-1", "data:image/png;base64,AA", None, None, None), KEY_OF_CLAIM)
    assert len(session.calls) == 1 and session.calls[0][2]["allow_redirects"] is False


def test_a_caller_without_the_url_secret_is_refused_without_reading_the_key() -> None:
    def unreadable() -> str:
        raise RuntimeError("Secrets Manager is throttling")

    guarded = SignedWebhookVerifier(unreadable)
    with not_raising(RuntimeError):  # the key is not read at all
        assert guarded.verify(SIGNED, BODY, None, hash_webhook_secret(SECRET)) is False
        assert guarded.verify(SIGNED, BODY, "t" * 43, hash_webhook_secret(SECRET)) is False


def test_the_accounts_task_limit_is_read_once_and_is_the_fallback_while_unreadable() -> None:
    from vary_region.provider.account_limit import AccountLimit

    answers: list[Any] = [RuntimeError("down"), None, 12, 99]

    def read() -> int | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    limit = AccountLimit(read, fallback=10)
    assert [limit(), limit(), limit(), limit()] == [10, 10, 12, 12]
    assert answers == [99], "read until known, then never again"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"APIFRAME_API_VERSION": "v1"}, 10),
        ({"APIFRAME_API_VERSION": "v2", "MAX_ACTIVE_TASKS": "7"}, 7),
        ({"APIFRAME_API_VERSION": "v2"}, "the account's"),
    ],
)
def test_the_provider_slot_limit_is_the_setting_or_under_v2_left_empty_the_accounts(
    env: dict[str, str], expected: Any
) -> None:
    from vary_region import wiring
    from vary_region.provider.account_limit import AccountLimit
    from vary_region.settings import Settings

    settings = Settings.from_env({"JOBS_BUCKET": "b", "JOBS_TABLE": "t", "APIFRAME_API_KEY_SECRET_ID": "s"} | env)
    limit = wiring.provider_slot_limit(settings)
    if expected == "the account's":
        assert isinstance(limit, AccountLimit)
    else:
        assert limit == expected
