"""Per-job accounting of provider calls and webhook answers, robust to other jobs in flight."""

from __future__ import annotations

import json
from typing import Any

from vary_region.provider.webhook_token import webhook_token


class ProviderRecorder:
    """Records every request that reaches the simulator (method, path, the task ids or webhook URL it
    names, and the status it got), so a test can count its own job's calls while other jobs run.
    Install with `ProviderRecorder.install(sim, monkeypatch)`."""

    def __init__(self) -> None:
        import threading

        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def install(cls, sim: Any, monkeypatch: Any) -> ProviderRecorder:
        recorder = cls()
        original = sim._handle

        def handle(method: str, raw_path: str, authorization: str | None, body: bytes, api_key: Any = None) -> Any:
            status = 500
            try:
                response = original(method, raw_path, authorization, body, api_key)
                status = response.status
                return response
            except Exception as exc:  # the simulator answers its own _BadRequest with a 400
                status = 400 if type(exc).__name__ == "_BadRequest" else 500
                raise
            finally:
                recorder._record(method, raw_path, body, status)

        monkeypatch.setattr(sim, "_handle", handle)
        return recorder

    def _record(self, method: str, raw_path: str, body: bytes, status: int) -> None:
        import urllib.parse

        path = urllib.parse.urlsplit(raw_path).path
        if path.startswith("/v2/"):  # recorded as the v1 call it stands for, so tests count either alike
            from vary_region_local.simulator_v2 import v2_request

            method, path, body = v2_request(method, path, body) or (method, path, body)
            status = 200 if status == 202 else status  # v2 accepts a paid call with 202, v1 with 200
        call: dict[str, Any] = {"method": method, "path": path, "status": status, "task_ids": (), "webhook_url": None}
        if method == "POST" and path in ("/fetch", "/fetch-many", "/inpaint", "/imagine", "/upscale-1x"):
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                payload = {}
            if isinstance(payload, dict):
                ids = payload.get("task_ids") if path == "/fetch-many" else [payload.get("task_id")]
                call["task_ids"] = tuple(i for i in ids or () if isinstance(i, str))
                url = payload.get("webhook_url")
                # v2 carries the stage's secret after a "~" (never in a token): the URL is what precedes it.
                call["webhook_url"] = url.rpartition("~")[0] if isinstance(url, str) and "~" in url else url
        with self._lock:
            self.calls.append(call)

    def _snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.calls)

    def fetches(self, task_id: str) -> int:
        """Fetch calls (single or batched) that asked about this task."""
        return sum(1 for c in self._snapshot() if c["path"] in ("/fetch", "/fetch-many") and task_id in c["task_ids"])

    def image_gets(self, task_id: str) -> int:
        import urllib.parse

        prefix = f"/images/{urllib.parse.quote(task_id, safe='')}/"
        return sum(1 for c in self._snapshot() if c["method"] == "GET" and c["path"].startswith(prefix))

    def inpaint_calls(self, job_id: str, status: int | None = None) -> int:
        """/inpaint requests made for this job (recognised by its webhook URL); status=200: paid ones."""
        return self.stage_calls(job_id, "inpaint", status)

    def stage_calls(self, job_id: str, stage: str, status: int | None = None) -> int:
        """Requests for one stage of this job (/imagine, /upscale-1x or /inpaint, recognised by the
        stage's webhook URL); status=200: paid ones."""
        path = {"imagine": "/imagine", "upscale": "/upscale-1x", "inpaint": "/inpaint"}[stage]
        suffix = "/" + webhook_token(job_id, stage)
        return sum(
            1
            for c in self._snapshot()
            if c["path"] == path
            and str(c["webhook_url"]).endswith(suffix)
            and (status is None or c["status"] == status)
        )

    def side_effects(self, *task_ids: str) -> tuple[int, int]:
        """(Fetch calls, image downloads) concerning these tasks."""
        return sum(self.fetches(t) for t in task_ids), sum(self.image_gets(t) for t in task_ids)


class WebhookRecorder:
    """Wraps the local webhook function and records each invocation's job path and HTTP status (what
    API Gateway's access log would show). Install with `WebhookRecorder.install(stack, monkeypatch)`."""

    def __init__(self, function: Any) -> None:
        import threading

        self._function = function
        self._lock = threading.Lock()
        self.answers: list[tuple[str, int]] = []

    @classmethod
    def install(cls, stack: Any, monkeypatch: Any) -> WebhookRecorder:
        recorder = cls(stack.functions["webhook"])
        monkeypatch.setitem(stack.functions, "webhook", recorder)
        return recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._function, name)

    def invoke(self, event: dict[str, Any]) -> Any:
        status = 500
        try:
            response = self._function.invoke(event)
            status = int(response.get("statusCode", 200)) if isinstance(response, dict) else 200
            return response
        finally:
            with self._lock:
                self.answers.append((event.get("rawPath", ""), status))

    def statuses(self, job_id: str, stage: str = "inpaint") -> list[int]:
        """The answers to the webhooks of one stage of the job (a plain job's is the inpaint)."""
        path = "/webhook/" + webhook_token(job_id, stage)
        with self._lock:  # under v2 the path goes on with "~" and the stage's secret
            return [status for raw_path, status in self.answers if raw_path.partition("~")[0] == path]


class HoldRecorder:
    """The submit queue's hold, as the submitter calls it: which uploads it put back, and when for."""

    def __init__(self) -> None:
        self.held: list[tuple[str, int | None]] = []

    def __call__(self, key: str, delay_seconds: int | None = None) -> None:
        self.held.append((key, delay_seconds))
