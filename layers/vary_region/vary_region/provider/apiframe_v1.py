"""APIFRAME HTTP client: timeouts on every call, bounded retries, and no blind resubmission.

Every accepted /inpaint costs credits. A request that failed before it reached the provider
(connection refused, connect timeout), or that the provider refused without taking it (429, 408,
503), is safe to retry. A request whose answer was lost after it was sent (read timeout, reset
mid-response), or that ended in an error raised after the API's handler may have run (500) or
behind a gateway (502, 504), may have created a task and is reported as SubmissionAmbiguous
instead. Failures before anything was sent (the key could not be read, the body could not be
built) are RequestNotSent. Fetch is free, so it retries every transient answer.

A paid call that carries a key the provider documents as deduplicating it (v2's generate and its
`Idempotency-Key`) may be sent again after an uncertain answer (`resend_uncertain`): the same bytes
and the same key, within the same retry budget. Once one attempt may have landed, the call can only
end with an answer that names the task or as SubmissionAmbiguous, never as a refusal or as
"unavailable" (either would give the claim back, and a new claim sends a new key).
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from vary_region.core.errors import ProviderRejected, ProviderUnavailable, RequestNotSent, SubmissionAmbiguous
from vary_region.observability import traced_http_session, tracer
from vary_region.provider.stage_requests import ImagineRequest, InpaintRequest, StageRequest, UpscaleRequest
from vary_region.provider.task_result import TaskResult, parse_task_result

__all__ = ["ApiframeClient", "ImagineRequest", "InpaintRequest", "RetryPolicy", "StageRequest", "UpscaleRequest"]

if TYPE_CHECKING:  # imported on first use: the handlers' import path (and cold start) stays lean
    import requests

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# For a paid /inpaint these answers do not say "not accepted". A 500 comes from the API's own handler,
# which may have created (and charged) the task before failing; a gateway's 502/504 may hide an origin
# that took the request. Resending could pay twice, so the outcome is unknown, never retried.
# 503 (like 429 and 408) is a refusal to take the request at all: retried. Fetch retries all of them.
AMBIGUOUS_SUBMIT_STATUS = frozenset({500, 502, 504})
FETCH_MANY_LIMIT = 20


def v1_request(request: StageRequest) -> tuple[str, dict[str, str]]:
    """The v1 endpoint and JSON body of a paid stage request."""
    if isinstance(request, InpaintRequest):
        path, body = "/inpaint", {"parent_task_id": request.parent_task_id, "mask": request.mask_data_url}
        if request.prompt:
            body["prompt"] = request.prompt
    elif isinstance(request, ImagineRequest):
        path, body = "/imagine", {"prompt": request.prompt, "aspect_ratio": request.aspect_ratio}
    else:
        path, body = "/upscale-1x", {"parent_task_id": request.parent_task_id, "index": request.index}
    if request.webhook_url:
        body["webhook_url"] = request.webhook_url
    if request.webhook_secret:  # v1 echoes it back as the x-webhook-secret header
        body["webhook_secret"] = request.webhook_secret
    return path, body


class RetryPolicy(NamedTuple):
    """How long, and how often, a call to APIFRAME is retried after a refusal it may retry."""

    budget_seconds: float = 20.0
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a provider's Retry-After wins when it is longer."""
        jittered = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        return max(jittered, retry_after or 0.0)


DEFAULT_RETRY = RetryPolicy()


class ApiframeClient:
    def __init__(
        self,
        base_url: str,
        api_key: Callable[[], str],
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 15.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._given_session = session
        self._timeout = (connect_timeout, read_timeout)
        self._retry = retry
        self._sleep = sleep

    @functools.cached_property
    def _session(self) -> requests.Session:
        return self._given_session or traced_http_session()

    @tracer.capture_method(capture_response=False)
    def submit(self, request: StageRequest, idempotency_key: str | None = None) -> str:
        """POST a paid task (/imagine, /upscale-1x, /inpaint); returns the new task id. Never resends
        a request that may have landed. v1 documents no idempotency key: none is sent."""
        path, payload = v1_request(request)
        body = self._call(path, payload, ambiguous_after_send=True)
        task_id = body.get("task_id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not task_id:
            # The provider answered 2xx, so a task may exist; we cannot know its id.
            raise SubmissionAmbiguous(f"APIFRAME accepted {path} but returned no task_id")
        return task_id

    @tracer.capture_method(capture_response=False)
    def fetch(self, task_id: str, deadline: float | None = None) -> TaskResult:
        """deadline: a time.monotonic() value the call must end by (the invocation's own limit)."""
        return parse_task_result(self._call("/fetch", {"task_id": task_id}, deadline=deadline))

    @tracer.capture_method(capture_response=False)
    def fetch_many(self, task_ids: list[str], deadline: float | None = None) -> list[TaskResult]:
        """Fetch up to 20 tasks; /fetch-many wants at least two ids, so one id goes to /fetch."""
        if len(task_ids) > FETCH_MANY_LIMIT:
            raise ValueError(f"at most {FETCH_MANY_LIMIT} task ids per call")
        if len(task_ids) == 1:
            try:
                return [self.fetch(task_ids[0], deadline)]
            except ProviderRejected as exc:
                if exc.status == 404:  # as /fetch-many does, an unknown id is simply not in the answer
                    return []
                raise
        if not task_ids:
            return []
        body = self._call("/fetch-many", {"task_ids": task_ids}, deadline=deadline)
        tasks = body.get("tasks", []) if isinstance(body, dict) else []
        results = []
        for task in tasks if isinstance(tasks, list) else []:
            try:
                results.append(parse_task_result(task))
            except ValueError:
                continue
        return results

    @tracer.capture_method(capture_response=False)
    def account_credits(self) -> int | None:
        """GET /account: the credits left on the account, or None when the answer holds no number (its
        shape is documented only by the provider's own client: read it defensively)."""
        body = self._call("/account", None)
        return whole_number(body.get("credits") if isinstance(body, dict) else None)

    def _call(
        self,
        path: str,
        payload: dict[str, Any] | None,
        *,
        ambiguous_after_send: bool = False,
        resend_uncertain: bool = False,
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """POST `payload` to `path`, or GET it when there is no payload. headers: added to every
        attempt unchanged (an idempotency key). resend_uncertain: a paid call whose uncertain answers
        may be sent again because the provider deduplicates it by its key."""
        body, prepared = self._prepare(path, payload)
        headers = prepared | (headers or {})
        budget_end = time.monotonic() + self._retry.budget_seconds
        deadline = budget_end if deadline is None else min(budget_end, deadline)
        from requests.exceptions import RequestException

        attempt, landed = 0, _MayHaveLanded(path, resend_uncertain)
        while True:
            retry_after: float | None = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise landed.or_else(ProviderUnavailable(f"no time left to call APIFRAME {path}"))
            try:
                response = self._session.request(
                    "GET" if body is None else "POST",
                    self._base_url + path,
                    data=body,
                    headers=headers,
                    timeout=(self._timeout[0], min(self._timeout[1], max(remaining, 1.0))),
                    allow_redirects=False,  # the API never redirects; a redirect would carry the key elsewhere
                )
            except RequestException as exc:
                if ambiguous_after_send and _may_have_been_received(exc):
                    landed.record(f"no answer from APIFRAME {path} after sending ({type(exc).__name__})")
                reason = f"{type(exc).__name__} calling APIFRAME {path}"
            else:
                if response.status_code < 300:
                    return _json_or_empty(response)
                if ambiguous_after_send and _uncertain(response.status_code):
                    landed.record(f"APIFRAME {path} answered {response.status_code} after receiving it")
                elif response.status_code not in RETRYABLE_STATUS:
                    raise landed.or_else(ProviderRejected(response.status_code, provider_error_message(response)))
                reason = f"APIFRAME {path} answered {response.status_code}"
                retry_after = _retry_after_seconds(response)
            pause = self._retry.delay(attempt, retry_after)
            if time.monotonic() + pause > deadline:
                raise landed.or_else(ProviderUnavailable(f"{reason}; gave up after {attempt + 1} attempts"))
            self._sleep(pause)
            attempt += 1

    def _prepare(self, path: str, payload: dict[str, Any] | None) -> tuple[bytes | None, dict[str, str]]:
        """Everything a call needs, built before the first byte is sent, so that a failure here is
        known to have reached nobody (RequestNotSent) and can never be mistaken for a lost answer."""
        try:
            api_key = self._api_key()
        except Exception as exc:  # Secrets Manager / SSM down, no permission, an empty secret
            raise RequestNotSent(f"the API key could not be read ({type(exc).__name__}); {path} not called") from exc
        headers = {"Authorization": api_key, "Accept": "application/json"}
        if payload is None:
            return None, headers
        try:
            body = json.dumps(payload, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise RequestNotSent(f"the {path} request could not be built ({type(exc).__name__})") from exc
        return body, headers | {"Content-Type": "application/json"}


class _MayHaveLanded:
    """Whether an attempt of a paid call may have reached the provider, and what that leaves the call."""

    def __init__(self, path: str, resend_uncertain: bool) -> None:
        self._path, self._resend = path, resend_uncertain
        self._first: str | None = None

    def record(self, reason: str) -> None:
        """An attempt may have landed: without a deduplicating key the call ends here, ambiguous."""
        if not self._resend:
            raise SubmissionAmbiguous(reason)
        self._first = self._first or reason

    def or_else(self, error: Exception) -> Exception:
        """How the call ends without an answer naming its task: `error`, unless an attempt may have
        landed (then a refusal or an outage of a resend says nothing about that attempt)."""
        if self._first is None:
            return error
        return SubmissionAmbiguous(f"{self._first}; sent again with the same idempotency key, then: {error}")


def whole_number(value: Any) -> int | None:
    """A count the provider sent as a number or a numeric string; None for anything else."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def _uncertain(status: int) -> bool:
    """A paid call's answer that does not say "not taken": 500, 502, 504, any other 5xx but 503 (a CDN's
    520-524 among them), and redirects, which are never followed."""
    return status in AMBIGUOUS_SUBMIT_STATUS or (status >= 500 and status not in RETRYABLE_STATUS) or status < 400


def _may_have_been_received(exc: requests.exceptions.RequestException) -> bool:
    """Connection failures before sending are safe to retry; anything later may have created a task."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        text = f"{type(reason).__name__} {reason!r}"
        return not any(marker in text for marker in ("NewConnectionError", "NameResolutionError", "ConnectTimeout"))
    return True


def _json_or_empty(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def provider_error_message(response: requests.Response) -> str:
    """Read `{"errors":[{"msg"}]}` or `{"message"}`; never fail on an empty or non-JSON body."""
    body = _json_or_empty(response)
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            message = first.get("msg") or first.get("message") if isinstance(first, dict) else first
            if message:
                return str(message)[:1000]
        nested = body.get("error")
        if isinstance(nested, dict):  # v2: {"error": {"code": ..., "message": ...}}
            body = nested
        for key in ("message", "error", "detail"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()[:1000]
    return f"HTTP {response.status_code} with no message"


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return min(max(float(value), 0.0), 60.0) if value else None
    except ValueError:
        return None
