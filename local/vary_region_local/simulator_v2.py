"""The simulator's APIFRAME v2 dialect: the v2 paths, shapes, typed errors and signed webhooks, in
front of the same simulated tasks (and the same failure switches) as v1.

v2 as the provider's pages describe it (checked 2026-12-07): `X-API-Key`; `POST /v2/images/generate`
with `"model": "midjourney"`, `prompt` and `midjourneyParams.aspect_ratio` ("W:H"), where an
`Idempotency-Key` header makes a repeated request return the same job (the simulator's
`ApiframeSimulator._handle_v2` honours it: one job, charged once); `POST /v2/images/midjourney/action`
(`upsample`, `inpaint`, `parentJobId`); both answer 202 `{"jobId", "status": "QUEUED"}`. There is no
`/v2/images/midjourney/generate` (404). `GET /v2/jobs/:id` answers `id, status, model, progress,
result, error, creditCost, webhookStatus, createdAt, completedAt`, statuses upper case (`QUEUED`,
`PROCESSING`, `COMPLETED`, `FAILED`; lower case with the `lowercase_statuses` switch, as older pages
show them), `result` `{images, gridUrl}` (one URL with the `string_result` switch, as older pages
show it), a failure's `error` a string. `GET /v2/me`. Errors `{"error": {"code", "message"}}` with
`Retry-After` on 429. Webhooks: `{"event", "jobId", "status", "progress", "result", "model",
"creditCost", "completedAt"}` (`error` when failed), signed `X-Webhook-Signature: sha256=<hex>` over
the raw body with the SHA-256 digest of the key, and `X-Webhook-Event`.

Request bodies are checked against the documented fields: an unknown field is a 400, so that a
client's assumed field name cannot pass here and fail against the provider.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

GENERATE_PATH = "/v2/images/generate"
ACTION_PATH = "/v2/images/midjourney/action"
PAID_PATHS = (GENERATE_PATH, ACTION_PATH)
# v2's price list: the simulated account's balance falls by these as jobs are accepted.
V2_CREDITS = {"imagine": 16, "upscale": 4, "inpaint": 16}
_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    409: "parent_not_supported",
    429: "rate_limited",
}
# The documented request fields of each paid endpoint (and of the Midjourney model's own object).
_GENERATE_FIELDS = frozenset({"prompt", "model", "webhookUrl", "webhookEvents", "midjourneyParams"})
_MIDJOURNEY_PARAMS = frozenset({"aspect_ratio"})
_ACTION_FIELDS = {
    "upsample": frozenset({"parentJobId", "action", "index", "webhookUrl", "webhookEvents"}),
    "inpaint": frozenset({"parentJobId", "action", "mask", "prompt", "webhookUrl", "webhookEvents"}),
}
_WEBHOOK_EVENTS = frozenset({"progress", "completed", "failed"})
_RATIO = re.compile(r"[1-9][0-9]{0,2}:[1-9][0-9]{0,2}")


def signature(api_key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(hashlib.sha256(api_key.encode()).digest(), body, hashlib.sha256).hexdigest()


def v2_request(method: str, path: str, body: bytes) -> tuple[str, str, bytes] | None:
    """The v1 call a v2 request stands for (method, path, JSON body); None for a v2 path that has none."""
    if method == "POST" and path in PAID_PATHS:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return "POST", "/inpaint", b"not json"  # answered 400 by the v1 route, as v2 would
        if not isinstance(payload, dict):
            payload = {}
        hook = {"webhook_url": payload["webhookUrl"]} if isinstance(payload.get("webhookUrl"), str) else {}
        if path == GENERATE_PATH:
            params = payload.get("midjourneyParams")
            ratio = params.get("aspect_ratio") if isinstance(params, dict) else None
            v1 = {"prompt": payload.get("prompt"), "aspect_ratio": ratio or "1:1"}
            return "POST", "/imagine", json.dumps(v1 | hook).encode()
        action, parent = payload.get("action"), payload.get("parentJobId")
        if action == "upsample":
            v1 = {"parent_task_id": parent, "index": str(payload.get("index", ""))}
            return "POST", "/upscale-1x", json.dumps(v1 | hook).encode()
        if action == "inpaint":
            v1 = {"parent_task_id": parent, "mask": payload.get("mask"), "prompt": payload.get("prompt")}
            return "POST", "/inpaint", json.dumps({k: v for k, v in v1.items() if v is not None} | hook).encode()
        return "POST", "/inpaint", b'"unknown action"'
    if method == "GET" and path.startswith("/v2/jobs/"):
        return "POST", "/fetch", json.dumps({"task_id": unquote(path.removeprefix("/v2/jobs/"))}).encode()
    if method == "GET" and path == "/v2/me":
        return "GET", "/account", b""
    return None


def v2_refusal(path: str, body: bytes) -> str | None:
    """Why a paid v2 request's body is not one the provider documents (answered 400), or None."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None  # the v1 route answers a body that is no JSON
    if not isinstance(payload, dict):
        return None
    if path == GENERATE_PATH:
        fields, model = _GENERATE_FIELDS, payload.get("model")
        if model != "midjourney":
            return f'model must be a known model identifier, such as "midjourney" (got {model!r})'
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= 2000:
            return "prompt must be a string of 1 to 2,000 characters"
        refusal = _midjourney_params_refusal(payload.get("midjourneyParams"))
    else:
        fields = _ACTION_FIELDS.get(str(payload.get("action")), frozenset(payload))
        refusal = None
    unknown = sorted(set(payload) - fields)
    if unknown:
        return f"unknown field(s): {', '.join(unknown)}"
    events = payload.get("webhookEvents")
    if events is not None and (not isinstance(events, list) or not set(events) <= _WEBHOOK_EVENTS):
        return 'webhookEvents must list some of "progress", "completed", "failed"'
    return refusal


def _midjourney_params_refusal(params: Any) -> str | None:
    if params is None:
        return None
    if not isinstance(params, dict):
        return "midjourneyParams must be an object"
    unknown = sorted(set(params) - _MIDJOURNEY_PARAMS)
    if unknown:
        return f"unknown field(s) in midjourneyParams: {', '.join(unknown)}"
    ratio = params.get("aspect_ratio")
    if ratio is not None and (not isinstance(ratio, str) or not _RATIO.fullmatch(ratio)):
        return 'midjourneyParams.aspect_ratio must be "W:H", such as "16:9"'
    return None


def v2_error(status: int, payload: Any) -> dict[str, Any]:
    """An error answer in v2's words, from a v1 route's error payload."""
    message = "request failed"
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            message = str(errors[0].get("msg") or message)
        elif isinstance(payload.get("message"), str):
            message = payload["message"]
    return {"error": {"code": _ERROR_CODES.get(status, "server_error"), "message": message}}


def v2_answer(v1_path: str, status: int, payload: Any, max_concurrent_jobs: int, shape: JobShape) -> Any:
    """A v1 route's answer in v2's words."""
    if status >= 300:
        return v2_error(status, payload)
    if v1_path == "/account":
        return {
            "team": {
                "plan": payload.get("plan"),
                "credits": payload.get("credits"),
                "maxConcurrentJobs": max_concurrent_jobs,
            }
        }
    if v1_path == "/fetch":
        return v2_job(payload, shape)
    return {"jobId": payload.get("task_id"), "status": shape.status("QUEUED")}


class JobShape:
    """How the simulator words a v2 job: the current pages' form, or an older page's (statuses in
    lower case, `result` as one URL)."""

    def __init__(self, *, lowercase_statuses: bool = False, string_result: bool = False) -> None:
        self.lowercase_statuses, self.string_result = lowercase_statuses, string_result

    def status(self, status: str) -> str:
        return status.lower() if self.lowercase_statuses else status

    def result(self, images: list[Any], grid: str | None) -> Any:
        if self.string_result:  # the one URL of an older page: a grid job's grid, an upsample's image
            return grid or (images[0] if images else None)
        return {"images": images} | ({"gridUrl": grid} if grid else {})


CURRENT = JobShape()


def v2_job(view: dict[str, Any], shape: JobShape = CURRENT) -> dict[str, Any]:
    """A v1 task payload (progress, finished, failed, pending) as a v2 job (GET /v2/jobs/:id)."""
    task_type = str(view.get("task_type") or "")
    stage = "upscale" if task_type.startswith("upscale") else task_type
    job: dict[str, Any] = {"id": view.get("task_id"), "model": "midjourney"}
    job |= {k: v for k, v in view.items() if k not in _V1_FIELDS}  # the extra-fields switch carries over
    empty = {"result": None, "error": None, "completedAt": None}
    status = view.get("status")
    ended = {"completedAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    if status == "failed":  # its credits are refunded
        failed = {"status": shape.status("FAILED"), "progress": 0, "error": view.get("message"), "creditCost": 0}
        return job | empty | ended | failed
    cost = {"creditCost": V2_CREDITS.get(stage, 16)}
    if "image_urls" in view or "image_url" in view:
        images = view.get("image_urls") if "image_urls" in view else [view["image_url"]]
        result = shape.result(list(images or []), view.get("original_image_url") or None)
        return job | empty | cost | ended | {"status": shape.status("COMPLETED"), "progress": 100, "result": result}
    if status == "finished":  # a job whose result is no image (a describe): text only
        text = {"content": view.get("content")}
        return job | empty | cost | ended | {"status": shape.status("COMPLETED"), "progress": 100, "result": text}
    if status == "processing":
        return job | empty | cost | {"status": shape.status("PROCESSING"), "progress": _number(view.get("percentage"))}
    return job | empty | cost | {"status": shape.status("QUEUED"), "progress": 0}


def v2_webhook(view: dict[str, Any], api_key: str, shape: JobShape = CURRENT) -> tuple[bytes, dict[str, str]]:
    """A webhook's body (the documented event payload) and headers, signed with the key."""
    job = v2_job(view, shape)
    status = str(job["status"]).upper()
    event = {"COMPLETED": "completed", "FAILED": "failed"}.get(status, "progress")
    payload: dict[str, Any] = {"event": event, "jobId": job.pop("id"), "status": job.pop("status")}
    kept: tuple[str, ...]
    if event == "failed":
        kept = ("error", "model")
    elif event == "completed":
        kept = ("progress", "result", "model", "creditCost", "completedAt")
    else:
        kept = ("progress", "model")
    extras = {k: v for k, v in job.items() if k not in _V2_JOB_FIELDS}  # the extra-fields switch
    payload |= {k: job[k] for k in kept} | extras
    body = json.dumps(payload).encode()
    return body, {"X-Webhook-Signature": signature(api_key, body), "X-Webhook-Event": event}


def _number(value: Any) -> Any:
    """v1's percentage string as v2's number; anything else as it is (tests post odd forms on purpose)."""
    if value is None:
        return 0
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return value


_V1_FIELDS = frozenset(
    {"task_id", "task_type", "status", "percentage", "original_image_url", "image_urls", "image_url", "message"}
)
_V2_JOB_FIELDS = frozenset({"model", "progress", "result", "error", "creditCost", "completedAt"})
