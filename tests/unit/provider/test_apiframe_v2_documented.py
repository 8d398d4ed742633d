"""APIFRAME v2 as its pages document it (checked 2026-12-07): every request the adapter sends is pinned
to the documented path, headers and body fields, and the documented answers are read from the pages'
own examples, verbatim.

Pages: Image Generation (`POST /v2/images/generate`, its `Idempotency-Key`, 202), the Midjourney
model (`midjourneyParams.aspect_ratio`, the result `{images, gridUrl}`), Follow-up actions
(`POST /v2/images/midjourney/action`: upsample, inpaint), Get Job (`GET /v2/jobs/:id`; the current
page's result is an object, an older page's a URL string), Webhooks (the event payloads).

A field name the adapter sends that is not in these lists fails here, before it fails against the
provider: the generate path and its `aspectRatio` were once assumed, and every chain from a prompt
would have failed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from urllib3.exceptions import ProtocolError
from vary_region.core.errors import ProviderRejected, ProviderUnavailable, RequestNotSent, SubmissionAmbiguous
from vary_region.core.stages import JobStage
from vary_region.provider.apiframe_v1 import RetryPolicy
from vary_region.provider.apiframe_v2 import ApiframeV2Client, parse_v2_job
from vary_region.provider.stage_requests import ImagineRequest, InpaintRequest, UpscaleRequest
from vary_region.provider.task_result import TaskState
from vary_region.submit.paid_call import idempotency_key

from tests.support.waits import not_raising

KEY = "afk_your_api_key_here"
BASE = "https://api.apiframe.ai"
JOB = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
HOOK = "https://hooks.example/webhook/token"
SECRET = "s" * 43
CLAIM_KEY = idempotency_key("job-1", JobStage.IMAGINE, "claim-1")

# ---- the documented requests ---------------------------------------------------------------------
# The headers every v2 call has, and those a paid one adds.
READ_HEADERS = {"X-API-Key", "Accept"}
PAID_HEADERS = READ_HEADERS | {"Content-Type", "Idempotency-Key"}
# Image Generation's common body, and the Midjourney model's own object.
GENERATE_FIELDS = {"prompt", "model", "webhookUrl", "webhookEvents", "midjourneyParams"}
MIDJOURNEY_PARAMS = {"aspect_ratio"}
# Follow-up actions, per action.
ACTION_FIELDS = {
    "upsample": {"parentJobId", "action", "index", "webhookUrl", "webhookEvents"},
    "inpaint": {"parentJobId", "action", "mask", "prompt", "webhookUrl", "webhookEvents"},
}


class _Answer:
    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.status_code, self._payload, self.headers = status, payload, headers or {}

    def json(self) -> Any:
        return self._payload


class _Session(requests.Session):
    def __init__(self, *answers: _Answer | Exception) -> None:
        super().__init__()
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # an _Answer
        assert isinstance(url, str) and url.startswith(BASE)
        data = kwargs.get("data")
        self.calls.append(
            {
                "method": method,
                "path": url.removeprefix(BASE),
                "headers": dict(kwargs["headers"]),
                "body": json.loads(data) if data is not None else None,
            }
        )
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(*answers: _Answer | Exception, budget: float | None = None) -> tuple[ApiframeV2Client, _Session]:
    """budget: a retry budget in seconds, spent in real (short) pauses; None: retries without pausing."""
    session = _Session(*answers)
    if budget is None:
        retry, sleep = RetryPolicy(budget_seconds=5), (lambda s: None)
    else:
        retry, sleep = RetryPolicy(budget_seconds=budget, base_delay=0.02, max_delay=0.05), time.sleep
    return ApiframeV2Client(BASE, lambda: KEY, session=session, retry=retry, sleep=sleep), session


ACCEPTED = _Answer(202, {"jobId": JOB, "status": "QUEUED"})  # Image Generation: "Status: 202 Accepted"


def test_the_imagine_stage_is_the_documented_generate_call() -> None:
    client, session = _client(ACCEPTED)
    prompt = "a futuristic city skyline at sunset, cyberpunk style"

    assert client.submit(ImagineRequest(prompt, "16:9", None, None), CLAIM_KEY) == JOB

    (call,) = session.calls
    assert (call["method"], call["path"]) == ("POST", "/v2/images/generate")
    assert set(call["headers"]) == PAID_HEADERS
    assert call["headers"]["X-API-Key"] == KEY and call["headers"]["Idempotency-Key"] == CLAIM_KEY
    # The Midjourney page's own curl example, byte for byte the same JSON.
    assert call["body"] == {
        "prompt": "a futuristic city skyline at sunset, cyberpunk style",
        "model": "midjourney",
        "midjourneyParams": {"aspect_ratio": "16:9"},
    }


def test_the_upscale_stage_is_the_documented_upsample_action() -> None:
    client, session = _client(ACCEPTED)

    client.submit(UpscaleRequest(JOB, "2", None, None), CLAIM_KEY)

    (call,) = session.calls
    assert (call["method"], call["path"]) == ("POST", "/v2/images/midjourney/action")
    assert set(call["headers"]) == PAID_HEADERS and call["headers"]["Idempotency-Key"] == CLAIM_KEY
    assert call["body"] == {"parentJobId": JOB, "action": "upsample", "index": 2}  # the page's example


@pytest.mark.parametrize(
    "request_",
    [
        ImagineRequest("a lighthouse", "3:2", HOOK, SECRET),
        UpscaleRequest(JOB, "4", HOOK, SECRET),
        InpaintRequest(JOB, "data:image/png;base64,AAAA", "a red balloon", HOOK, SECRET),
        InpaintRequest(JOB, "data:image/png;base64,AAAA", None, None, None),
    ],
    ids=["generate", "upsample", "inpaint", "inpaint-bare"],
)
def test_every_paid_request_sends_documented_fields_only(request_: Any) -> None:
    client, session = _client(ACCEPTED)

    client.submit(request_, CLAIM_KEY)

    (call,) = session.calls
    body, headers = call["body"], call["headers"]
    assert set(headers) == PAID_HEADERS and headers["Idempotency-Key"] == CLAIM_KEY
    if isinstance(request_, ImagineRequest):
        assert call["path"] == "/v2/images/generate"
        assert set(body) <= GENERATE_FIELDS and {"prompt", "model"} <= set(body)
        assert body["model"] == "midjourney" and set(body["midjourneyParams"]) <= MIDJOURNEY_PARAMS
        assert body["midjourneyParams"]["aspect_ratio"] == request_.aspect_ratio  # the job file's ratio, "W:H"
    else:
        assert call["path"] == "/v2/images/midjourney/action"
        assert set(body) <= ACTION_FIELDS[body["action"]] and {"parentJobId", "action"} <= set(body)
    if isinstance(request_, UpscaleRequest):
        assert body["index"] == 4 and isinstance(body["index"], int)  # an integer, 1-4 (v1's is a string)
    if isinstance(request_, InpaintRequest):
        assert body["mask"] == request_.mask_data_url  # the data: prefix is accepted and stripped
    if request_.webhook_url:
        assert body["webhookUrl"] == f"{HOOK}~{SECRET}"  # v2 echoes no secret: it rides in the URL
    assert "webhook_secret" not in json.dumps(body)


def test_the_reads_are_the_documented_gets_without_a_body_or_a_key_of_their_own() -> None:
    client, session = _client(_Answer(200, {"id": JOB, "status": "QUEUED"}), _Answer(200, {"team": {"credits": 5}}))

    client.fetch(JOB)
    client.account_credits()

    assert [(c["method"], c["path"], c["body"]) for c in session.calls] == [
        ("GET", f"/v2/jobs/{JOB}", None),
        ("GET", "/v2/me", None),
    ]
    assert all(set(c["headers"]) == READ_HEADERS for c in session.calls)


def test_a_paid_call_without_an_idempotency_key_is_never_sent() -> None:
    client, session = _client(ACCEPTED)
    with pytest.raises(RequestNotSent):
        client.submit(ImagineRequest("a lighthouse", "1:1", None, None))
    assert session.calls == []


# ---- a generate whose answer is lost: sent again, with the same key ------------------------------
def _reset() -> requests.exceptions.ConnectionError:
    """The connection reset after the request went out (what requests raises then)."""
    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    )


@pytest.mark.parametrize(
    "lost",
    [
        _Answer(500, {}),
        _Answer(502, {}),
        _Answer(504, {}),
        _Answer(524, {}),
        _reset(),
        requests.exceptions.ReadTimeout(),
    ],
    ids=["500", "502", "504", "524", "reset", "read-timeout"],
)
def test_a_generate_whose_answer_was_lost_is_sent_again_with_the_same_key(lost: Any) -> None:
    client, session = _client(lost, ACCEPTED)
    request = ImagineRequest("a lighthouse", "1:1", HOOK, SECRET)

    with not_raising(SubmissionAmbiguous):
        assert client.submit(request, CLAIM_KEY) == JOB

    assert len(session.calls) == 2
    assert [call["headers"]["Idempotency-Key"] for call in session.calls] == [CLAIM_KEY, CLAIM_KEY]
    assert session.calls[0]["body"] == session.calls[1]["body"], "the same request, byte for byte"


def test_a_generate_whose_answers_stay_uncertain_is_ambiguous_never_unavailable_or_refused() -> None:
    # Sent, answer lost; the resends meet a busy provider, then a refusal: the first may have made the job.
    client, session = _client(_Answer(500, {}), _Answer(429, {}, {"Retry-After": "0"}), _Answer(402, {}))
    with not_raising(ProviderRejected), pytest.raises(SubmissionAmbiguous) as ambiguous:
        client.submit(ImagineRequest("a lighthouse", "1:1", None, None), CLAIM_KEY)
    assert "same idempotency key" in str(ambiguous.value) and len(session.calls) == 3

    # Uncertain until the budget is spent: ambiguous, not "unavailable" (that would give the claim back,
    # and the next claim's new key could pay for a second job).
    client, session = _client(*[_Answer(503, {})] * 100, budget=0.2)
    with pytest.raises(ProviderUnavailable):  # never sent: 503 says "not taken"
        client.submit(ImagineRequest("a lighthouse", "1:1", None, None), CLAIM_KEY)
    client, session = _client(_reset(), *[_Answer(503, {})] * 100, budget=0.2)
    with not_raising(ProviderUnavailable), pytest.raises(SubmissionAmbiguous):
        client.submit(ImagineRequest("a lighthouse", "1:1", None, None), CLAIM_KEY)


@pytest.mark.parametrize(
    "lost", [_Answer(500, {}), _reset(), requests.exceptions.ReadTimeout()], ids=["500", "reset", "read-timeout"]
)
def test_an_action_whose_answer_was_lost_stays_ambiguous_the_key_being_undocumented_there(lost: Any) -> None:
    client, session = _client(lost, ACCEPTED)
    with pytest.raises(SubmissionAmbiguous):
        client.submit(InpaintRequest(JOB, "data:image/png;base64,AAAA", None, None, None), CLAIM_KEY)
    assert len(session.calls) == 1, "never sent again"
    assert session.calls[0]["headers"]["Idempotency-Key"] == CLAIM_KEY


def test_the_key_is_the_claims_the_same_for_its_attempts_and_new_for_a_new_claim() -> None:
    assert idempotency_key("job-1", JobStage.IMAGINE, "claim-1") == CLAIM_KEY
    others = {
        idempotency_key("job-1", JobStage.IMAGINE, "claim-2"),  # a new claim, after one given back
        idempotency_key("job-1", JobStage.UPSCALE, "claim-1"),
        idempotency_key("job-2", JobStage.IMAGINE, "claim-1"),
    }
    assert CLAIM_KEY not in others and len(others) == 3


# ---- the documented answers, verbatim -------------------------------------------------------------
QUEUED_JOB = """{
  "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "QUEUED",
  "model": "midjourney",
  "progress": 0,
  "result": null,
  "error": null,
  "creditCost": 10,
  "webhookStatus": null,
  "createdAt": "2026-03-15T10:00:00.000Z",
  "completedAt": null
}"""
PROCESSING_JOB = """{
  "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "PROCESSING",
  "model": "midjourney",
  "progress": 65,
  "result": null,
  "error": null,
  "creditCost": 10,
  "webhookStatus": null,
  "createdAt": "2026-03-15T10:00:00.000Z",
  "completedAt": null
}"""
COMPLETED_JOB = """{
  "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "COMPLETED",
  "model": "midjourney",
  "progress": 100,
  "result": {
    "images": [
      "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890-1.png",
      "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890-2.png",
      "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890-3.png",
      "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890-4.png"
    ],
    "gridUrl": "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890-grid.png"
  },
  "error": null,
  "creditCost": 10,
  "webhookStatus": "sent",
  "createdAt": "2026-03-15T10:00:00.000Z",
  "completedAt": "2026-03-15T10:00:32.000Z"
}"""
# An older Get Job page: the result is the one CDN URL.
COMPLETED_JOB_OLDER = """{
  "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "COMPLETED",
  "model": "midjourney",
  "progress": 100,
  "result": "https://cdn.apiframe.ai/results/a1b2c3d4.png",
  "error": null,
  "creditCost": 10,
  "webhookStatus": "sent",
  "createdAt": "2026-03-15T10:00:00.000Z",
  "completedAt": "2026-03-15T10:00:32.000Z"
}"""
FAILED_JOB = """{
  "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "FAILED",
  "model": "midjourney",
  "progress": 0,
  "result": null,
  "error": "Provider returned an error: content policy violation",
  "creditCost": 0,
  "webhookStatus": "sent",
  "createdAt": "2026-03-15T10:00:00.000Z",
  "completedAt": "2026-03-15T10:00:05.000Z"
}"""
# The upsample page: "a single image and no gridUrl".
UPSAMPLE_RESULT = """{
  "images": [
    "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890-1.png"
  ]
}"""
COMPLETED_EVENT = """{
  "event": "completed",
  "jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "COMPLETED",
  "progress": 100,
  "result": "https://cdn.apiframe.ai/results/a1b2c3d4.png",
  "model": "midjourney",
  "creditCost": 10,
  "completedAt": "2026-03-15T10:00:32.000Z"
}"""
FAILED_EVENT = """{
  "event": "failed",
  "jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "FAILED",
  "error": "Provider returned an error: content policy violation",
  "model": "midjourney"
}"""
PROGRESS_EVENT = """{
  "event": "progress",
  "jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
  "status": "PROCESSING",
  "progress": 45,
  "model": "midjourney"
}"""
CDN2 = "https://cdn2.apiframe.ai/images/a1b2c3d4-e5f6-7890-abcd-ef1234567890"
OLDER_URL = "https://cdn.apiframe.ai/results/a1b2c3d4.png"


def _lower_case(text: str) -> str:
    """The same answer with its status in lower case, as older pages show it."""
    payload = json.loads(text)
    payload["status"] = payload["status"].lower()
    return json.dumps(payload)


@pytest.mark.parametrize("casing", [str, _lower_case], ids=["upper-case", "lower-case"])
@pytest.mark.parametrize(
    ("example", "state", "percentage", "running"),
    [
        (QUEUED_JOB, TaskState.RUNNING, 0, True),
        (PROCESSING_JOB, TaskState.RUNNING, 65, True),
        (PROGRESS_EVENT, TaskState.RUNNING, 45, True),
        (COMPLETED_JOB, TaskState.FINISHED, 100, False),
        (COMPLETED_JOB_OLDER, TaskState.FINISHED, 100, False),
        (COMPLETED_EVENT, TaskState.FINISHED, 100, False),
        (FAILED_JOB, TaskState.FAILED, 0, False),
        (FAILED_EVENT, TaskState.FAILED, None, False),
    ],
    ids=[
        "queued",
        "processing",
        "progress-event",
        "completed",
        "completed-older",
        "completed-event",
        "failed",
        "failed-event",
    ],
)
def test_every_documented_job_and_event_is_read_in_either_casing(
    example: str, state: TaskState, percentage: int | None, running: bool, casing: Any
) -> None:
    result = parse_v2_job(json.loads(casing(example)))

    assert (result.task_id, result.state, result.percentage, result.reported_running) == (
        JOB,
        state,
        percentage,
        running,
    )
    if state is TaskState.FAILED:
        assert result.error_message == "Provider returned an error: content policy violation"


def test_the_current_result_object_is_a_grid_and_its_four_images() -> None:
    result = parse_v2_job(json.loads(COMPLETED_JOB))

    assert result.grid_url == f"{CDN2}-grid.png"
    assert result.image_urls == tuple(f"{CDN2}-{i}.png" for i in range(1, 5))
    assert result.incomplete_reason() is None, "a whole grid result"


def test_an_upsamples_one_image_is_its_image() -> None:
    job = json.loads(COMPLETED_JOB) | {"result": json.loads(UPSAMPLE_RESULT)}
    result = parse_v2_job(job)

    assert result.image_url == f"{CDN2}-1.png" and result.grid_url is None
    assert result.incomplete_reason(single_image=True) is None


@pytest.mark.parametrize("example", [COMPLETED_JOB_OLDER, COMPLETED_EVENT], ids=["job", "event"])
def test_a_result_that_is_one_url_is_an_upsamples_image_or_a_grid_stages_grid(example: str) -> None:
    result = parse_v2_job(json.loads(example))

    assert (result.image_url, result.grid_url, result.image_urls) == (OLDER_URL, OLDER_URL, ())
    assert result.one_url_result is True, "the completion worker cuts a grid stage's four images from it"
    assert result.incomplete_reason(single_image=True) is None, "an upsample's one image"
    assert result.incomplete_reason() is None, "a grid stage's grid, whole"
    assert result.result_urls == {"grid": OLDER_URL}, "only the grid is copied"


def test_a_result_object_short_of_images_is_never_taken_for_a_one_url_grid() -> None:
    job = json.loads(COMPLETED_JOB)
    job["result"] = {"images": [], "gridUrl": job["result"]["gridUrl"]}
    result = parse_v2_job(job)

    assert result.one_url_result is False
    assert result.incomplete_reason() == "0 images instead of 4", "asked again, then RESULT_INCOMPLETE, as today"


@pytest.mark.parametrize("status", ["ARCHIVED", "waiting", "", None, 7])
def test_an_unknown_status_is_still_running_but_not_said_to_be(status: Any) -> None:
    """Running, until the reconciler's task age limit (MAX_TASK_AGE_SECONDS) ends the job, as any
    undocumented status is; but not reported running in so many words."""
    result = parse_v2_job(json.loads(QUEUED_JOB) | {"status": status})
    assert (result.state, result.reported_running) == (TaskState.RUNNING, False)


def test_the_generate_answer_is_read_from_its_202() -> None:
    client, _ = _client(
        _Answer(202, json.loads('{\n  "jobId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",\n  "status": "QUEUED"\n}'))
    )
    assert client.submit(ImagineRequest("a lighthouse", "1:1", None, None), CLAIM_KEY) == JOB
