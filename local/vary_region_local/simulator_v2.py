"""The simulator's APIFRAME v2 dialect: the v2 paths, shapes, typed errors and signed webhooks, in
front of the same simulated tasks (and the same failure switches) as v1.

v2 as the reference describes it: `X-API-Key`, `POST /v2/images/midjourney/action` (`upsample`,
`inpaint`, `parentJobId`), `GET /v2/jobs/:id`, `GET /v2/me`, errors as `{"error": {"code",
"message"}}` with `Retry-After` on 429, webhooks signed `X-Webhook-Signature: sha256=<hex>` over
the raw body with the SHA-256 digest of the key, and `X-Webhook-Event`. Where the reference is
silent the simulator assumes: imagine is `POST /v2/images/midjourney/generate`, a new job is
answered `{"jobId", "status": "queued"}`, and a webhook's body is the job as `GET /v2/jobs/:id`
shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import unquote

# v2's price list: the simulated account's balance falls by these as jobs are accepted.
V2_CREDITS = {"imagine": 16, "upscale": 4, "inpaint": 16}
_ACTIONS = {"imagine": "generate", "upscale": "upsample", "inpaint": "inpaint"}
_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    409: "parent_not_supported",
    429: "rate_limited",
}


def signature(api_key: str, body: bytes) -> str:
    return "sha256=" + hmac.new(hashlib.sha256(api_key.encode()).digest(), body, hashlib.sha256).hexdigest()


def v2_request(method: str, path: str, body: bytes) -> tuple[str, str, bytes] | None:
    """The v1 call a v2 request stands for (method, path, JSON body); None for a v2 path that has none."""
    if method == "POST" and path in ("/v2/images/midjourney/generate", "/v2/images/midjourney/action"):
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return "POST", "/inpaint", b"not json"  # answered 400 by the v1 route, as v2 would
        if not isinstance(payload, dict):
            payload = {}
        hook = {"webhook_url": payload["webhookUrl"]} if isinstance(payload.get("webhookUrl"), str) else {}
        if path.endswith("/generate"):
            v1 = {"prompt": payload.get("prompt"), "aspect_ratio": payload.get("aspectRatio") or "1:1"}
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


def v2_answer(v1_path: str, status: int, payload: Any, max_concurrent_jobs: int) -> Any:
    """A v1 route's answer in v2's words."""
    if status >= 300:
        message = "request failed"
        if isinstance(payload, dict):
            errors = payload.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                message = str(errors[0].get("msg") or message)
            elif isinstance(payload.get("message"), str):
                message = payload["message"]
        return {"error": {"code": _ERROR_CODES.get(status, "server_error"), "message": message}}
    if v1_path == "/account":
        return {
            "team": {
                "plan": payload.get("plan"),
                "credits": payload.get("credits"),
                "maxConcurrentJobs": max_concurrent_jobs,
            }
        }
    if v1_path == "/fetch":
        return v2_job(payload)
    return {"jobId": payload.get("task_id"), "status": "queued"}


def v2_job(view: dict[str, Any]) -> dict[str, Any]:
    """A v1 task payload (progress, finished, failed, pending) as a v2 job."""
    task_type = str(view.get("task_type") or "")
    stage = "upscale" if task_type.startswith("upscale") else task_type
    job: dict[str, Any] = {"id": view.get("task_id"), "action": _ACTIONS.get(stage, stage), "model": "midjourney"}
    job |= {k: v for k, v in view.items() if k not in _V1_FIELDS}  # the extra-fields switch carries over
    status = view.get("status")
    if status == "failed":
        return job | {
            "status": "failed",
            "progress": 0,
            "error": {"code": "job_failed", "message": view.get("message")},
        }
    if "image_urls" in view or "image_url" in view:
        images = view.get("image_urls") if "image_urls" in view else [view["image_url"]]
        result: dict[str, Any] = {"images": images}
        if view.get("original_image_url"):
            result["gridUrl"] = view["original_image_url"]
        return job | {"status": "completed", "progress": 100, "result": result, "creditCost": V2_CREDITS.get(stage, 16)}
    if status == "finished":  # a job whose result is no image (a describe): text only
        return job | {"status": "completed", "progress": 100, "result": {"content": view.get("content")}}
    if status == "processing":
        return job | {"status": "processing", "progress": view.get("percentage") or 0}
    return job | {"status": "queued", "progress": 0}


def v2_webhook(view: dict[str, Any], api_key: str) -> tuple[bytes, dict[str, str]]:
    """A webhook's body and headers: the job, signed."""
    job = v2_job(view)
    body = json.dumps(job).encode()
    event = {"completed": "completed", "failed": "failed"}.get(job["status"], "progress")
    return body, {"X-Webhook-Signature": signature(api_key, body), "X-Webhook-Event": event}


_V1_FIELDS = frozenset(
    {"task_id", "task_type", "status", "percentage", "original_image_url", "image_urls", "image_url", "message"}
)
