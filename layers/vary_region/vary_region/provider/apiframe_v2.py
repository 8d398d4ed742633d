"""APIFRAME v2 (`https://api.apiframe.ai`, `X-API-Key`): the same port as v1, its own wire form.

Paid requests, as the provider's pages name them: the imagine stage is `POST /v2/images/generate`
with `"model": "midjourney"` and the model's own `midjourneyParams` (`aspect_ratio`, "W:H"); the
follow-up actions are `POST /v2/images/midjourney/action` (`upsample`, `inpaint`, with
`parentJobId`). Both answer 202 with `{"jobId", "status"}`. Every paid call carries an
`Idempotency-Key` (the job's, its stage's and its claim's: see submit/paid_call.py). The provider
documents the key on generate only, so only a generate whose answer was uncertain (a 5xx, a reset,
a time-out) is sent again, with the same key; an action's uncertain answer stays ambiguous, as in v1.

Jobs are read with `GET /v2/jobs/:id`; there is no batch read, so `fetch_many` reads them one by one
(reads are free). A job's `result` is `{images, gridUrl}` on the current pages and a single URL on
older ones; its status is upper case now (`COMPLETED`) and was lower case: both are read. The retry,
ambiguity and rejection rules are otherwise v1's, from the same transport; v2's typed errors add two
codes of their own: 402 (the account has too few credits) and 409 (the parent is too old for
follow-up actions).
"""

from __future__ import annotations

from typing import Any

from vary_region.core.errors import ProviderRejected, RequestNotSent, SubmissionAmbiguous
from vary_region.observability import tracer
from vary_region.provider.apiframe_v1 import ApiframeClient, whole_number
from vary_region.provider.stage_requests import ImagineRequest, InpaintRequest, StageRequest
from vary_region.provider.task_result import MalformedTaskPayload, TaskResult, TaskState, parse_percentage
from vary_region.provider.webhook_token import url_with_secret

GENERATE_PATH = "/v2/images/generate"
ACTION_PATH = "/v2/images/midjourney/action"
MODEL = "midjourney"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The paid calls whose key the provider documents ("prevents duplicate jobs if the same request is
# sent multiple times"): only these are sent again after an uncertain answer.
DEDUPLICATED_PATHS = frozenset({GENERATE_PATH})
# v2's own codes for two of its typed errors; every other refusal stays PROVIDER_REJECTED.
REJECTION_CODES = {402: "PROVIDER_CREDITS_INSUFFICIENT", 409: "PARENT_TOO_OLD"}
# Statuses seen or assumed for a v2 job; anything not listed is still running.
FINISHED_STATUSES = frozenset({"completed", "complete", "succeeded", "success", "finished", "done"})
FAILED_STATUSES = frozenset({"failed", "error", "cancelled", "canceled"})
RUNNING_STATUSES = frozenset({"queued", "pending", "starting", "processing", "running", "retrying"})
# v2's action names, in the task types the pipeline knows from v1 (imagine, upscale#N, inpaint).
TASK_TYPES = {"generate": "imagine", "imagine": "imagine", "upsample": "upscale", "inpaint": "inpaint"}


def v2_request(request: StageRequest) -> tuple[str, dict[str, Any]]:
    """The v2 endpoint and JSON body of a paid stage request. v2 echoes no webhook secret: the
    per-job secret travels in the webhook URL instead (see webhook_token.url_with_secret)."""
    body: dict[str, Any]
    if isinstance(request, ImagineRequest):
        path = GENERATE_PATH
        body = {"prompt": request.prompt, "model": MODEL, "midjourneyParams": {"aspect_ratio": request.aspect_ratio}}
    elif isinstance(request, InpaintRequest):
        path = ACTION_PATH
        body = {"action": "inpaint", "parentJobId": request.parent_task_id, "mask": request.mask_data_url}
        if request.prompt:
            body["prompt"] = request.prompt
    else:
        path, body = ACTION_PATH, {"action": "upsample", "parentJobId": request.parent_task_id}
        body["index"] = int(request.index)
    if request.webhook_url:
        url = request.webhook_url
        body["webhookUrl"] = url_with_secret(url, request.webhook_secret) if request.webhook_secret else url
    return path, body


class ApiframeV2Client(ApiframeClient):
    """v2 behind the same methods as v1's client: submit, fetch, fetch_many, account_credits."""

    @tracer.capture_method(capture_response=False)
    def submit(self, request: StageRequest, idempotency_key: str | None = None) -> str:
        """idempotency_key: the same for every attempt of this claim's call (a new claim, a new key)."""
        path, payload = v2_request(request)
        if not idempotency_key:
            raise RequestNotSent(f"a paid v2 call needs an idempotency key; {path} not called")
        try:
            body = self._call(
                path,
                payload,
                ambiguous_after_send=True,
                resend_uncertain=path in DEDUPLICATED_PATHS,
                headers={IDEMPOTENCY_HEADER: idempotency_key},
            )
        except ProviderRejected as exc:
            raise ProviderRejected(exc.status, exc.message, REJECTION_CODES.get(exc.status)) from None
        job_id = _job_id(body)
        if job_id is None:
            raise SubmissionAmbiguous(f"APIFRAME v2 accepted {path} but returned no job id")
        return job_id

    @tracer.capture_method(capture_response=False)
    def fetch(self, task_id: str, deadline: float | None = None) -> TaskResult:
        from urllib.parse import quote

        return parse_v2_job(self._call(f"/v2/jobs/{quote(task_id, safe='')}", None, deadline=deadline))

    @tracer.capture_method(capture_response=False)
    def fetch_many(self, task_ids: list[str], deadline: float | None = None) -> list[TaskResult]:
        results = []
        for task_id in task_ids:
            try:
                results.append(self.fetch(task_id, deadline))
            except ProviderRejected as exc:
                if exc.status != 404:  # as v1's /fetch-many does, an unknown id is simply not in the answer
                    raise
            except MalformedTaskPayload:
                continue
        return results

    @tracer.capture_method(capture_response=False)
    def account_credits(self) -> int | None:
        """GET /v2/me: `team.credits`, or None when the answer holds no number."""
        team = _team(self._call("/v2/me", None))
        return whole_number(team.get("credits"))

    def max_concurrent_jobs(self) -> int | None:
        """GET /v2/me: `team.maxConcurrentJobs`, the account's own limit on jobs in flight."""
        return whole_number(_team(self._call("/v2/me", None)).get("maxConcurrentJobs"))

    def _prepare(self, path: str, payload: dict[str, Any] | None) -> tuple[bytes | None, dict[str, str]]:
        body, headers = super()._prepare(path, payload)
        key = headers.pop("Authorization")
        if not key:
            raise RequestNotSent(f"the API key is empty; {path} not called")
        return body, headers | {"X-API-Key": key}


def parse_v2_job(payload: Any) -> TaskResult:
    """A v2 job (GET /v2/jobs/:id, or a webhook body, bare or wrapped in `data` / `job`) as the
    pipeline's TaskResult. An upsample's one image is its `image_url`; a grid job's four are
    `image_urls`, with `result.gridUrl` as the grid. A `result` that is one URL (the older pages'
    form) names the job's one image whatever the job is: it is both `image_url` and `grid_url`
    (`one_url_result`): an upsample's image, or a grid stage's grid, which the completion worker
    cuts into the four images it is a 2x2 composite of."""
    if isinstance(payload, dict):
        for wrapper in ("data", "job"):
            inner = payload.get(wrapper)
            if isinstance(inner, dict) and _job_id(inner):
                payload = inner
                break
    job_id = _job_id(payload)
    if job_id is None or not isinstance(payload, dict):
        raise MalformedTaskPayload("the payload has no job id")
    status = payload.get("status")
    status = status.strip().lower() if isinstance(status, str) else None
    found = payload.get("result")
    result: dict[str, Any] = found if isinstance(found, dict) else {}
    single = found.strip() or None if isinstance(found, str) else None
    listed = result.get("images")
    images = [u.strip() if isinstance(u, str) else "" for u in listed] if isinstance(listed, list) else []
    if status in FAILED_STATUSES:
        state = TaskState.FAILED
    elif status in FINISHED_STATUSES:
        state = TaskState.FINISHED
    else:
        state = TaskState.RUNNING
    grid = result.get("gridUrl")
    action = payload.get("action") or payload.get("type")
    task_type = TASK_TYPES.get(action.strip().lower(), action) if isinstance(action, str) else None
    return TaskResult(
        task_id=job_id,
        state=state,
        provider_status=status,
        percentage=parse_percentage(payload.get("progress")),
        grid_url=grid.strip() or None if isinstance(grid, str) else single,
        image_urls=tuple(images),
        error_message=_error_message(payload.get("error")) if state is TaskState.FAILED else None,
        task_type=task_type,
        reported_running=state is TaskState.RUNNING and status in RUNNING_STATUSES,
        image_url=images[0] or None if len(images) == 1 else single,
        one_url_result=single is not None,
    )


def _job_id(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in ("id", "jobId", "job_id"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _team(body: Any) -> dict[str, Any]:
    team = body.get("team") if isinstance(body, dict) else None
    return team if isinstance(team, dict) else {}


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    if isinstance(error, str) and error.strip():
        return error.strip()[:1000]
    return "the provider reported the job as failed without a message"
