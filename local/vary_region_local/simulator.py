"""APIFRAME simulator: a local HTTP server that speaks the documented APIFRAME v1 API, or v2
(`api_version="v2"`, `--api-version v2`: see simulator_v2).

It is the test double of the pipeline and the engine of the local demo. Any parent task id is
accepted (an id this simulator never created is a finished upscale, unless its prefix asks for
another kind of parent: see `_implicit_parent`), tasks run on background threads that post
progress and final webhooks, results are real PNG images (the parent picture redrawn only inside
the mask), and the provider's known or suspected misbehaviours can be switched on through
`SimulatorFaults`, from Python or through the unauthenticated `/_sim/*` control endpoints.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import colorsys
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import math
import random
import re
import signal
import socket
import struct
import threading
import time
import typing
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
from PIL import Image, ImageDraw

from vary_region_local import simulator_v2

log = logging.getLogger(__name__)

_MAX_BODY_BYTES = 12 * 1024 * 1024  # an 8 MB mask base64-encoded, plus the rest of the JSON
_MAX_MASK_BYTES = 8 * 1024 * 1024  # the provider's documented mask limit
_MAX_MASK_SIDE = 8192  # refuse decompression bombs before Pillow allocates them
_WEBHOOK_TIMEOUT = 5.0
_INITIAL_CREDITS = 1_000_000  # a long `make local` session never runs dry (account_credits sets it)
# APIFRAME's fast-mode prices: the account's balance falls by these as tasks are accepted.
_TASK_CREDITS = {"imagine": 4, "upscale": 2, "inpaint": 4}
_GRID_TASKS = ("imagine", "inpaint")  # the tasks whose result is a 2x2 grid an upscale picks from
_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg|webp);base64,(.*)", re.DOTALL | re.IGNORECASE)
_RESULT_NAMES = ("grid", "1", "2", "3", "4")
# Ids no parent is made up for: Fetch answers 404, as the provider does for a task it never had.
_UNKNOWN_PREFIXES = ("missing-", "ghost-", "nope")
_DESCRIPTION = "1 a lighthouse at dusk, oil painting --ar 3:2"  # a describe task's result: text, no image
_RUNNING_PARENT = re.compile(r"running-(\d+)-")  # running-<n>-...: finishes after n Fetch answers
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_PARTIAL_SHAPES = {
    "one_image": lambda grid, images: {"image_urls": images[:1]},
    "no_grid": lambda grid, images: {"image_urls": images},
    "five_images": lambda grid, images: {"original_image_url": grid, "image_urls": [*images, images[0] + "?again"]},
    "repeated_image": lambda grid, images: {"original_image_url": grid, "image_urls": [*images[:3], images[0]]},
    "no_images": lambda grid, images: {"original_image_url": grid, "image_urls": [], "status": "finished"},
}
_EXTRA_FIELDS = {"actions": ["upsample1", "variation1", "reroll"], "sim_note": "unknown field"}
_STAT_NAMES = (
    "inpaint_calls",
    "imagine_calls",
    "upscale_calls",
    "tasks_created",
    "fetch_calls",
    "webhooks_sent",
    "webhooks_failed",
    "image_requests",
    "running_tasks_peak",
    "credits_spent",
)


@dataclass
class SimulatorFaults:
    """Failure switches, all off by default, and the account's answers (credits, status, task limit).
    A task snapshots them when it is created."""

    reject_inpaint: str | None = None
    reject_inpaint_status: int = 400  # what reject_inpaint answers: 400, or v2's 402 (credits) or 409 (parent too old)
    rate_limit_next: int = 0
    server_error_next: int = 0
    server_error_status: int = 500  # what server_error_next answers: 500 (the API failed) or 503, 502, 504
    inpaint_response_delay: float = 0.0
    fail_task: str | None = None
    finished_with_status: bool = False
    duplicate_webhooks: bool = False
    reorder_webhooks: bool = False
    drop_webhooks: str | None = None  # "all" or "final"
    image_delay: float = 0.0
    image_status: int | None = None
    image_truncate: bool = False
    image_bytes_per_second: float | None = None
    image_throttle_after_bytes: int = 0  # image_bytes_per_second caps only the bytes after these
    image_padding_bytes: int = 0  # 12 at least when set: an empty PNG chunk's own size
    # The parent's ranged header read (the intake's, before paying) trickles at this rate; the
    # image_* switches above model the result CDN during whole-image copies and leave it alone.
    parent_image_bytes_per_second: float | None = None
    extra_fields: bool = False
    # A finished inpaint answered in a shape that is not a whole result (webhook and Fetch):
    # "one_image", "no_grid", "five_images", "repeated_image" or "no_images"; the whole result is
    # answered after `partial_result_fetches` Fetch answers of the task (0: never).
    partial_result: str | None = None
    partial_result_fetches: int = 0
    # The account: GET /account answers `account_credits` less what the tasks accepted since cost
    # (their balance falls as tasks are accepted), or `account_status` (an error) when set.
    account_credits: int = _INITIAL_CREDITS
    account_status: int | None = None
    max_concurrent_jobs: int = 12  # what v2's GET /v2/me reports as the plan's limit (not enforced)
    # The next N paid calls (either generation) are accepted, their task created and charged, and
    # their answer lost: the caller sees `lose_answer_status` (a 5xx), or with None a connection
    # closed before any answer.
    lose_answer_next: int = 0
    lose_answer_status: int | None = None
    # v2's older pages' forms: a finished job's `result` as one URL (a grid job's grid, an upsample's
    # image) instead of {images, gridUrl}; statuses in lower case instead of upper case.
    string_result: bool = False
    lowercase_statuses: bool = False


def _fault_kinds() -> dict[str, tuple[type, bool]]:
    """Fault name -> (base type, accepts None), read from the dataclass so the two never drift."""
    kinds: dict[str, tuple[type, bool]] = {}
    for name, hint in typing.get_type_hints(SimulatorFaults).items():
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        kinds[name] = (args[0], True) if args else (hint, False)
    return kinds


_FAULT_KINDS = _fault_kinds()


def _coerce_fault(name: str, value: object) -> object:
    """Validate one fault value (from Python or JSON); raise ValueError with a readable reason."""
    if name not in _FAULT_KINDS:
        raise ValueError(f"unknown fault {name!r}")
    base, optional = _FAULT_KINDS[name]
    if value is None and optional:
        return None
    if base in (bool, str):
        if not isinstance(value, base):
            raise ValueError(f"{name} must be a {base.__name__}")
        if name == "drop_webhooks" and value not in ("all", "final"):
            raise ValueError('drop_webhooks must be "all", "final" or null')
        if name == "partial_result" and value not in _PARTIAL_SHAPES:
            raise ValueError(f"partial_result must be one of {sorted(_PARTIAL_SHAPES)} or null")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if base is int and not float(value).is_integer():
        raise ValueError(f"{name} must be an integer")
    if name in ("image_status", "account_status") and not 100 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status code")
    if name in ("server_error_status", "lose_answer_status") and not 500 <= value <= 599:
        raise ValueError(f"{name} must be a 5xx HTTP status code")
    return base(value)


class _BadRequest(Exception):
    """Answered with the documented 400 shape: {"errors": [{"msg": ...}]}."""


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    reset: bool = False  # the connection is closed without an answer
    bytes_per_second: float | None = None
    throttle_after: int = 0


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers or {})


def _error(status: int, message: str) -> _Response:
    return _json(status, {"errors": [{"msg": message}]})


@dataclass
class _Task:
    task_id: str
    task_type: str  # "inpaint", "imagine" or "upscale#<index>"
    status: str = "pending"  # then "processing", then "finished" or "failed"
    percentage: str | None = None
    parent_task_id: str | None = None
    prompt: str = ""
    aspect_ratio: str = "1:1"
    index: int = 1  # an upscale's image of its grid
    webhook_url: str | None = None
    webhook_secret: str | None = None
    mask_bytes: bytes | None = None
    result: dict[str, Any] | None = None  # the final payload, also what Fetch answers afterwards
    faults: SimulatorFaults = field(default_factory=SimulatorFaults)
    partial_fetches: int = 0  # Fetch answers given in the partial shape (faults.partial_result)
    finish_after_fetches: int | None = None  # a made-up running parent: Fetch answers left until it finishes


class ApiframeSimulator:
    """An APIFRAME-compatible server on a local port; see the module docstring."""

    webhook_timeout = _WEBHOOK_TIMEOUT  # seconds one webhook attempt waits for its answer

    def __init__(
        self,
        api_key: str = "sim-key",
        host: str = "127.0.0.1",
        port: int = 0,
        step_delay: float = 0.2,
        progress_steps: Sequence[int] = (25, 50, 75),
        image_size: tuple[int, int] = (512, 512),
        api_version: str = "v1",
    ) -> None:
        if api_version not in ("v1", "v2"):
            raise ValueError("api_version must be v1 or v2")
        self.api_key, self.host, self.port = api_key, host, port
        self.api_version = api_version  # v2: the v2 paths, shapes, errors and signed webhooks (simulator_v2)
        self.step_delay, self.progress_steps = step_delay, tuple(progress_steps)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.faults = SimulatorFaults()
        self.inpaint_requests: list[dict[str, Any]] = []
        self.stage_requests: list[dict[str, Any]] = []  # the /imagine and /upscale-1x bodies, in order
        # Every v2 paid request: its path, its Idempotency-Key header, the job it named and the status
        # the caller saw (0: no answer at all).
        self.paid_requests: list[dict[str, Any]] = []
        self._idempotent_jobs: dict[str, str] = {}  # a generate's Idempotency-Key -> its job id
        self._generate_lock = threading.Lock()  # a key's first request creates its job alone
        # Every image GET: its path, its Range header (None without one) and the status answered.
        self.image_requests_log: list[dict[str, Any]] = []
        # Every webhook sent (url, headers, body as text), so tests can replay or alter a real one.
        self.webhook_log: list[dict[str, Any]] = []
        self._request = threading.local()  # the request being served, per server thread
        self.base_url = ""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active_workers = 0
        self._running_tasks = 0  # created and not yet finished or failed: what a plan's task limit counts
        self._stats = dict.fromkeys(_STAT_NAMES, 0)
        self._tasks: dict[str, _Task] = {}
        self._images: dict[str, dict[str, bytes]] = {}  # task id -> grid, 1..4 as PNG bytes
        self._parents: dict[str, bytes] = {}
        self._stopping = threading.Event()
        self._resets = 0  # a throttled body still being sent stops when the faults are reset
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Callable[[bytes], _Response]] = {
            ("POST", "/inpaint"): self._inpaint,
            ("POST", "/fetch"): self._fetch,
            ("POST", "/fetch-many"): self._fetch_many,
            ("POST", "/imagine"): self._imagine,
            ("POST", "/upscale-1x"): self._upscale,
            ("GET", "/account"): self._account,
        }

    # ---- lifecycle and the Python control surface -------------------------------------------
    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        url_host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self.base_url = f"http://{url_host}:{self.port}"
        # A short poll interval keeps stop() fast, which matters for per-test servers.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="apiframe-simulator", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()  # task workers abandon their sleeps and send nothing more
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def set_faults(self, **changes: Any) -> None:
        """Validate every change first, so one bad value leaves all faults untouched."""
        checked = {name: _coerce_fault(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in checked.items():
                setattr(self.faults, name, value)

    def reset(self) -> None:
        """Clear faults, stats and the recorded /inpaint bodies; tasks are kept."""
        with self._lock:
            self._resets += 1
            for f in dataclasses.fields(SimulatorFaults):
                setattr(self.faults, f.name, f.default)
            self._stats = dict.fromkeys(_STAT_NAMES, 0)
            self._stats["running_tasks_peak"] = self._running_tasks
            self.inpaint_requests.clear()
            self.stage_requests.clear()
            self.paid_requests.clear()
            self.image_requests_log.clear()
            self.webhook_log.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def task(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            task = self._tasks.get(task_id)
            return dataclasses.asdict(task) if task else None

    def wait_idle(self, timeout: float = 10) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._active_workers == 0, timeout)

    def parent_image_png(self, parent_task_id: str) -> bytes:
        """The upscaled picture behind any task id: the grid's image of an upscale this simulator made
        from its own imagine task, otherwise a landscape seeded by the id."""
        with self._lock:
            cached = self._parents.get(parent_task_id)
            task = self._tasks.get(parent_task_id)
            grid_task = self._tasks.get(task.parent_task_id or "") if task is not None else None
        if cached is None and task is not None and grid_task is not None and grid_task.task_type in _GRID_TASKS:
            cached = self._task_images(grid_task)[str(task.index)]
            with self._lock:
                cached = self._parents.setdefault(parent_task_id, cached)
        if cached is None:
            cached = _png(_landscape(f"parent|{parent_task_id}", self.image_size))
            with self._lock:
                cached = self._parents.setdefault(parent_task_id, cached)
        return cached

    # ---- request dispatch ---------------------------------------------------------------------
    def _handle(
        self, method: str, raw_path: str, authorization: str | None, body: bytes, api_key: str | None = None
    ) -> _Response:
        path = urlsplit(raw_path).path
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        if method == "GET" and path.startswith("/images/"):
            return self._serve_image(path)
        if self.api_version == "v2":
            return self._handle_v2(method, path, api_key, body)
        route = self._routes.get((method, path))
        if route is None:
            return _error(404, "not found")
        counted = {"/inpaint": "inpaint_calls", "/imagine": "imagine_calls", "/upscale-1x": "upscale_calls"}
        if path in counted:
            self._count(counted[path])
        if not self._authorized(authorization):
            return _json(401, {})
        answer = route(body)
        return self._lose_answer(answer) if path in counted else answer

    def _handle_v2(self, method: str, path: str, api_key: str | None, body: bytes) -> _Response:
        """A v2 request, answered by the v1 route it stands for, in v2's words (v1 paths: 404)."""
        translated = simulator_v2.v2_request(method, path, body)
        if translated is None:
            return _json(404, simulator_v2.v2_error(404, {"message": "not found"}))
        v1_method, v1_path, v1_body = translated
        counted = {"/inpaint": "inpaint_calls", "/imagine": "imagine_calls", "/upscale-1x": "upscale_calls"}
        if v1_path in counted:
            self._count(counted[v1_path])
        presented = (api_key or "").strip().encode()
        if not hmac.compare_digest(presented, self.api_key.encode()):
            return _json(401, simulator_v2.v2_error(401, {"message": "invalid API key"}))
        if path not in simulator_v2.PAID_PATHS:
            return self._answer_v2(v1_method, v1_path, v1_body)
        refusal = simulator_v2.v2_refusal(path, body)
        key = getattr(self._request, "idempotency_key", None)
        if refusal is not None:
            answer = _json(400, simulator_v2.v2_error(400, {"message": refusal}))
        elif path == simulator_v2.GENERATE_PATH and key:
            answer = self._generate_once(key, v1_method, v1_path, v1_body)
        else:
            answer = self._answer_v2(v1_method, v1_path, v1_body)
        answer = self._lose_answer(answer)
        with self._lock:
            job_id = json.loads(answer.body or b"{}").get("jobId") if answer.status == 202 else None
            self.paid_requests.append(
                {"path": path, "idempotency_key": key, "job_id": job_id, "status": 0 if answer.reset else answer.status}
            )
        return answer

    def _generate_once(self, key: str, v1_method: str, v1_path: str, v1_body: bytes) -> _Response:
        """As the provider documents its Idempotency-Key: a generate sent again with the key of one
        that made a job answers that job, and makes (and charges) no other."""
        with self._generate_lock:
            with self._lock:
                known = self._idempotent_jobs.get(key)
            if known is not None:
                return _json(202, {"jobId": known, "status": self._job_shape().status("QUEUED")})
            answer = self._answer_v2(v1_method, v1_path, v1_body)
            if answer.status == 202:
                with self._lock:
                    self._idempotent_jobs[key] = json.loads(answer.body)["jobId"]
            return answer

    def _answer_v2(self, v1_method: str, v1_path: str, v1_body: bytes) -> _Response:
        try:
            answer = self._routes[(v1_method, v1_path)](v1_body)
        except _BadRequest as exc:
            answer = _error(400, str(exc))
        try:
            payload = json.loads(answer.body or b"{}")
        except ValueError:
            payload = {}
        v2 = simulator_v2.v2_answer(v1_path, answer.status, payload, self.faults.max_concurrent_jobs, self._job_shape())
        # A paid call is accepted with 202, as the provider answers a new job.
        status = 202 if answer.status == 200 and v1_path in ("/imagine", "/upscale-1x", "/inpaint") else answer.status
        return _json(status, v2, answer.headers)

    def _job_shape(self, faults: SimulatorFaults | None = None) -> simulator_v2.JobShape:
        faults = faults or self.faults
        return simulator_v2.JobShape(lowercase_statuses=faults.lowercase_statuses, string_result=faults.string_result)

    def _lose_answer(self, answer: _Response) -> _Response:
        """An accepted paid call's answer, or (lose_answer_next) a 5xx or a closed connection instead:
        the task exists and is charged, the caller cannot know it."""
        if answer.status >= 300:
            return answer
        with self._lock:
            if self.faults.lose_answer_next <= 0:
                return answer
            self.faults.lose_answer_next -= 1
            status = self.faults.lose_answer_status
        if status is None:
            return _Response(0, b"", reset=True)
        return _json(status, simulator_v2.v2_error(status, {}) if self.api_version == "v2" else {})

    def _authorized(self, header: str | None) -> bool:
        presented = (header or "").strip().encode()  # bytes: compare_digest refuses non-ASCII str
        return any(hmac.compare_digest(presented, ok.encode()) for ok in (self.api_key, f"Bearer {self.api_key}"))

    def _control(self, method: str, path: str, body: bytes) -> _Response:
        if path == "/_sim/stats" and method == "GET":
            return _json(200, self.stats())
        if path == "/_sim/faults" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    self.set_faults(**_json_object(body))
                except ValueError as exc:
                    raise _BadRequest(str(exc)) from None
            with self._lock:
                return _json(200, dataclasses.asdict(self.faults))
        if path == "/_sim/webhooks" and method == "GET":
            with self._lock:
                return _json(200, {"webhooks": list(self.webhook_log)})
        if path == "/_sim/reset" and method == "POST":
            self.reset()
            return _json(200, {"faults": dataclasses.asdict(self.faults), "stats": self.stats()})
        return _error(404, "not found")

    # ---- API endpoints --------------------------------------------------------------------------
    def _inpaint(self, body: bytes) -> _Response:
        with self._lock:  # counters must decrement atomically when clients race
            if self.faults.rate_limit_next > 0:
                self.faults.rate_limit_next -= 1
                return _json(429, {"message": "Too many requests"}, {"Retry-After": "1"})
            if self.faults.server_error_next > 0:
                self.faults.server_error_next -= 1
                return _json(self.faults.server_error_status, {})
            reject, delay = self.faults.reject_inpaint, self.faults.inpaint_response_delay
        if reject is not None:
            if self.faults.reject_inpaint_status != 400:
                return _error(self.faults.reject_inpaint_status, reject)
            raise _BadRequest(reject)
        payload = _json_object(body)
        parent_id = _required_str(payload, "parent_task_id")
        mask = _decode_mask(payload.get("mask"))
        prompt = _optional_str(payload, "prompt") or ""
        webhook_url, secret = _webhook_fields(payload)
        self._resolve_inpaint_parent(parent_id)
        task = self._create_task(
            "inpaint",
            parent_task_id=parent_id,
            prompt=prompt,
            mask_bytes=mask,
            webhook_url=webhook_url,
            webhook_secret=secret,
        )
        with self._lock:
            self.inpaint_requests.append(dict(payload))
        if delay:  # the task already runs: a client timing out here cannot know it was accepted
            time.sleep(delay)
        return _json(200, {"task_id": task.task_id})

    def _imagine(self, body: bytes) -> _Response:
        payload = _json_object(body)
        prompt = _required_str(payload, "prompt")
        aspect_ratio = _optional_str(payload, "aspect_ratio") or "1:1"
        if not re.fullmatch(r"[1-9][0-9]{0,2}:[1-9][0-9]{0,2}", aspect_ratio):
            raise _BadRequest("aspect_ratio must look like 16:9")
        webhook_url, secret = _webhook_fields(payload)
        task = self._create_task(
            "imagine", prompt=prompt, aspect_ratio=aspect_ratio, webhook_url=webhook_url, webhook_secret=secret
        )
        with self._lock:
            self.stage_requests.append({"endpoint": "/imagine", **payload})
        return _json(200, {"task_id": task.task_id})

    def _upscale(self, body: bytes) -> _Response:
        """Simplified: any parent id is accepted and the picture is the one of the new task id."""
        payload = _json_object(body)
        parent_id = _required_str(payload, "parent_task_id")
        index = str(payload.get("index", "")).strip()
        if index not in ("1", "2", "3", "4"):
            raise _BadRequest('index must be one of "1", "2", "3", "4"')
        webhook_url, secret = _webhook_fields(payload)
        with self._lock:
            parent = self._tasks.get(parent_id) or self._implicit_parent(parent_id)
        if parent is None:
            raise _BadRequest("parent task not found")
        # [assume] Midjourney upscales any grid, a Vary Region's too (its U1-U4 buttons); APIFRAME's page
        # names only imagine. `vary-region editor --job ID --image N` chains on an inpaint's grid so.
        if parent.task_type not in _GRID_TASKS or parent.status != "finished":
            raise _BadRequest("parent_task_id must be a finished imagine or inpaint task")
        task = self._create_task(
            f"upscale#{index}",
            parent_task_id=parent_id,
            index=int(index),
            webhook_url=webhook_url,
            webhook_secret=secret,
        )
        with self._lock:
            self.stage_requests.append({"endpoint": "/upscale-1x", **payload})
        return _json(200, {"task_id": task.task_id})

    def _fetch(self, body: bytes) -> _Response:
        self._count("fetch_calls")
        # Only /fetch makes up parents (the pipeline reads a parent with it); /fetch-many omits unknown ids.
        view = self._public_view(_required_str(_json_object(body), "task_id"), make_parent=True)
        return _json(200, view) if view is not None else _error(404, "task not found")

    def _fetch_many(self, body: bytes) -> _Response:
        self._count("fetch_calls")
        ids = _json_object(body).get("task_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not 2 <= len(ids) <= 20:
            raise _BadRequest("task_ids must be a list of 2 to 20 task id strings")
        views = [self._public_view(task_id) for task_id in ids]
        return _json(200, {"tasks": [view for view in views if view is not None]})

    def _account(self, body: bytes) -> _Response:
        with self._lock:
            status, balance = self.faults.account_status, self.faults.account_credits
            used, spent = self._stats["tasks_created"], self._stats["credits_spent"]
        if status is not None:
            return _json(status, {})
        return _json(
            200,
            {
                "email": "simulator@localhost",
                "plan": "simulator",
                "credits": max(0, balance - spent),
                "usage": {"tasks": used},
            },
        )

    # ---- tasks ----------------------------------------------------------------------------------
    def _resolve_inpaint_parent(self, parent_id: str) -> None:
        """An unknown id becomes a parent (see _implicit_parent), so any id works and Fetch knows it;
        a grid task is refused like the provider does."""
        with self._lock:
            parent = self._tasks.get(parent_id) or self._implicit_parent(parent_id)
        if parent is None:
            raise _BadRequest("parent task not found")
        if not parent.task_type.startswith("upscale#"):
            raise _BadRequest("parent_task_id must be an upscale-1x task, not a grid")
        if parent.status != "finished":
            raise _BadRequest("the parent task is not finished")

    def _implicit_parent(self, task_id: str) -> _Task | None:
        """The parent behind an id this simulator never created (call with the lock held): by prefix,
        `grid-` a finished imagine task, `failed-` a failed upscale, `running-<n>-` an upscale that
        finishes after n Fetch answers, `describe-` a finished task with text and no image,
        `missing-`/`ghost-`/`nope` none at all; any other id a
        finished upscale whose picture is `image_size`."""
        if task_id.startswith(_UNKNOWN_PREFIXES):
            return None
        running = _RUNNING_PARENT.match(task_id)
        if task_id.startswith("grid-"):
            task = _Task(task_id, "imagine", status="finished")
        elif task_id.startswith("failed-"):
            task = _Task(task_id, "upscale#1", status="failed")
            task.result = _failed_payload(task, "simulated parent failure")
        elif running:
            task = _Task(task_id, "upscale#1", status="processing", finish_after_fetches=int(running[1]))
        elif task_id.startswith("describe-"):
            task = _Task(task_id, "describe", status="finished")
            task.result = {"task_id": task_id, "task_type": "describe", "status": "finished", "content": _DESCRIPTION}
        else:
            task = _Task(task_id, "upscale#1", status="finished")
        if task.status == "finished" and task.result is None:
            task.result = self._result_payload(task)
        self._tasks[task_id] = task
        return task

    def _create_task(self, task_type: str, **attrs: Any) -> _Task:
        with self._lock:
            task = _Task(str(uuid.uuid4()), task_type, faults=dataclasses.replace(self.faults), **attrs)
            self._tasks[task.task_id] = task
            self._stats["tasks_created"] += 1
            prices = simulator_v2.V2_CREDITS if self.api_version == "v2" else _TASK_CREDITS
            self._stats["credits_spent"] += prices.get(task_type.partition("#")[0], 4)
            self._active_workers += 1
            self._running_tasks += 1
            self._stats["running_tasks_peak"] = max(self._stats["running_tasks_peak"], self._running_tasks)
        threading.Thread(target=self._run_task, args=(task,), name=f"sim-task-{task.task_id[:8]}", daemon=True).start()
        return task

    def _run_task(self, task: _Task) -> None:
        try:
            for step in self.progress_steps:
                if self._stopping.wait(self.step_delay):
                    return
                with self._lock:
                    task.status, task.percentage = "processing", str(step)
                self._deliver(task, _progress_payload(task, str(step)), final=False)
            if self._stopping.wait(self.step_delay):
                return
            self._deliver(task, self._finish(task), final=True)
            if task.faults.reorder_webhooks:
                self._deliver(task, _progress_payload(task, "50"), final=False)
        except Exception as exc:  # a simulator bug must not leave the task "processing" forever
            log.exception("simulated task %s crashed", task.task_id)
            with self._lock:
                if task.status not in ("finished", "failed"):
                    self._running_tasks -= 1
                task.status, task.result = "failed", _failed_payload(task, f"simulator error: {exc}")
        finally:
            with self._idle:
                if task.status not in ("finished", "failed"):  # stopped mid-task
                    self._running_tasks -= 1
                self._active_workers -= 1
                self._idle.notify_all()

    def _finish(self, task: _Task) -> dict[str, Any]:
        message = task.faults.fail_task
        if message is None and task.task_type in ("imagine", "inpaint"):
            self._task_images(task)  # render now, so image GETs after the final webhook are instant
        result = self._result_payload(task) if message is None else _failed_payload(task, message)
        with self._lock:
            task.status, task.result = ("finished" if message is None else "failed"), result
            self._running_tasks -= 1
        return _partial(result, task.faults.partial_result) if message is None else dict(result)

    def _result_payload(self, task: _Task) -> dict[str, Any]:
        result: dict[str, Any] = {"task_id": task.task_id, "task_type": task.task_type}
        if task.task_type.startswith("upscale#"):
            result["image_url"] = self._image_url(task.task_id, "parent")
        else:
            result["original_image_url"] = self._image_url(task.task_id, "grid")
            result["image_urls"] = [self._image_url(task.task_id, str(i)) for i in range(1, 5)]
        if task.faults.finished_with_status:
            result["status"] = "finished"
        return result

    def _public_view(self, task_id: str, make_parent: bool = False) -> dict[str, Any] | None:
        with self._lock:
            task = self._tasks.get(task_id) or (self._implicit_parent(task_id) if make_parent else None)
            if task is None:
                return None
            if task.finish_after_fetches is not None and task.result is None:
                if task.finish_after_fetches <= 0:
                    task.status, task.result = "finished", self._result_payload(task)
                task.finish_after_fetches -= 1
            if task.result is not None:
                view = dict(task.result)
                shape, limit = task.faults.partial_result, task.faults.partial_result_fetches
                if shape is not None and task.status == "finished" and (limit == 0 or task.partial_fetches < limit):
                    task.partial_fetches += 1
                    view = _partial(view, shape)
            elif task.status == "processing":
                view = _progress_payload(task, task.percentage or "0")
            else:
                view = {"task_id": task.task_id, "task_type": task.task_type, "status": "pending"}
            return _with_extras(view, self.faults)

    def _image_url(self, task_id: str, name: str) -> str:
        return f"{self.base_url}/images/{quote(task_id, safe='')}/{name}.png"

    # ---- webhooks -------------------------------------------------------------------------------
    def _deliver(self, task: _Task, payload: dict[str, Any], *, final: bool) -> None:
        drop = task.faults.drop_webhooks
        if not task.webhook_url or drop == "all" or (drop == "final" and final):
            return
        if self.api_version == "v2":  # the job, signed with the key; no secret is echoed
            shape = self._job_shape(task.faults)
            body, signed = simulator_v2.v2_webhook(_with_extras(payload, task.faults), self.api_key, shape)
        else:
            body, signed = json.dumps(_with_extras(payload, task.faults)).encode(), {}
        for _ in range(2 if task.faults.duplicate_webhooks else 1):
            if not self._stopping.is_set():
                self._post_webhook(task.webhook_url, task.webhook_secret, body, signed)

    def _post_webhook(
        self, url: str, secret: str | None, body: bytes, signed: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One attempt; its log entry (with the answer: a status, or the exception's name) is returned."""
        headers = {"Content-Type": "application/json", **(signed or {})}
        if secret:
            headers["x-webhook-secret"] = secret
        entry: dict[str, Any] = {"url": url, "headers": headers, "body": body.decode()}
        with self._lock:
            if len(self.webhook_log) < 10_000:
                self.webhook_log.append(entry)
        try:
            with requests.post(
                url, data=body, headers=headers, timeout=self.webhook_timeout, allow_redirects=False
            ) as response:
                delivered = 200 <= response.status_code < 300
                entry["answer"] = response.status_code
        except requests.RequestException as exc:
            delivered = False
            entry["answer"] = type(exc).__name__  # what a test or the rehearsal reads when one failed
        # The provider's delivery guarantees are unknown: count a failure, never retry it.
        self._count("webhooks_sent" if delivered else "webhooks_failed")
        return entry

    # ---- images ---------------------------------------------------------------------------------
    def _serve_image(self, path: str) -> _Response:
        self._count("image_requests")
        range_header = getattr(self._request, "range", None)
        response = self._ranged_image(path, range_header) if range_header else self._whole_image(path)
        with self._lock:
            self.image_requests_log.append({"path": path, "range": range_header, "status": response.status})
        return response

    def _ranged_image(self, path: str, range_header: str) -> _Response:
        """A Range request (the intake's read of a parent's header): answered 206 with those bytes.
        The image-host faults model the result CDN during copies, which asks for whole images."""
        png = self._image_for_path(path)
        wanted = _RANGE.fullmatch(range_header.strip())
        if png is None:
            return _error(404, "image not found")
        if wanted is None:  # an unparseable Range is ignored, as HTTP says
            return _Response(200, png, "image/png")
        start = int(wanted[1])
        end = min(int(wanted[2]) if wanted[2] else len(png) - 1, len(png) - 1)
        if start >= len(png):
            return _Response(416, b"", "image/png", headers={"Content-Range": f"bytes */{len(png)}"})
        with self._lock:
            rate = self.faults.parent_image_bytes_per_second
        return _Response(
            206,
            png[start : end + 1],
            "image/png",
            headers={"Content-Range": f"bytes {start}-{end}/{len(png)}"},
            bytes_per_second=rate,
        )

    def _whole_image(self, path: str) -> _Response:
        with self._lock:
            faults = dataclasses.replace(self.faults)
        if faults.image_delay:
            time.sleep(faults.image_delay)
        if faults.image_status is not None:
            return _error(faults.image_status, "simulated image host error")
        png = self._image_for_path(path)
        if png is None:
            return _error(404, "image not found")
        if faults.image_padding_bytes:
            png = _pad_png(png, faults.image_padding_bytes)
        return _Response(
            200,
            png,
            "image/png",
            truncate=faults.image_truncate,
            bytes_per_second=faults.image_bytes_per_second,
            throttle_after=faults.image_throttle_after_bytes,
        )

    def _image_for_path(self, path: str) -> bytes | None:
        quoted_id, _, file_name = path.removeprefix("/images/").rpartition("/")
        task_id, name = unquote(quoted_id), file_name.removesuffix(".png")
        if not task_id or not file_name.endswith(".png"):
            return None
        if name == "parent":
            return self.parent_image_png(task_id)
        with self._lock:
            task = self._tasks.get(task_id)
        if name not in _RESULT_NAMES or task is None or task.status != "finished":
            return None
        return self._task_images(task)[name] if task.task_type in ("imagine", "inpaint") else None

    def _task_images(self, task: _Task) -> dict[str, bytes]:
        """grid and 1..4 of an imagine or inpaint task, rendered once and cached."""
        with self._lock:
            cached = self._images.get(task.task_id)
        if cached is not None:
            return cached
        if task.task_type == "imagine":
            size = _picture_size(self.image_size, task.aspect_ratio)
            pictures = [_landscape(f"imagine|{task.prompt}|{i}", size) for i in range(1, 5)]
        else:
            parent = Image.open(io.BytesIO(self.parent_image_png(task.parent_task_id or ""))).convert("RGB")
            seed = f"{task.parent_task_id}|{task.prompt}"
            pictures = _inpaint_variations(parent, task.mask_bytes or b"", seed)
        images = {str(i): _png(picture) for i, picture in enumerate(pictures, start=1)}
        images["grid"] = _png(_grid(pictures))
        with self._lock:
            return self._images.setdefault(task.task_id, images)

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1


# ---- payload and request helpers ----------------------------------------------------------------
def _progress_payload(task: _Task, percentage: str) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "task_type": task.task_type,
        "status": "processing",
        "percentage": percentage,
    }  # a string, as documented


def _failed_payload(task: _Task, message: str) -> dict[str, Any]:
    return {"task_id": task.task_id, "task_type": task.task_type, "status": "failed", "message": message}


def _partial(result: dict[str, Any], shape: str | None) -> dict[str, Any]:
    """A finished inpaint's payload in one of the shapes that are not a whole result."""
    if shape is None or "image_urls" not in result:
        return dict(result)
    kept = {k: v for k, v in result.items() if k not in ("original_image_url", "image_urls")}
    return kept | _PARTIAL_SHAPES[shape](result["original_image_url"], list(result["image_urls"]))


def _with_extras(payload: dict[str, Any], faults: SimulatorFaults) -> dict[str, Any]:
    return {**payload, **_EXTRA_FIELDS} if faults.extra_fields else payload


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _BadRequest("Invalid request: the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _BadRequest("Invalid request: the body must be a JSON object")
    return payload


def _required_str(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f"{name} is required and must be a non-empty string")
    return value


def _optional_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise _BadRequest(f"{name} must be a string")
    return value


def _webhook_fields(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    url = _optional_str(payload, "webhook_url") or None
    if url is not None and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
        raise _BadRequest("webhook_url must be an absolute http(s) URL")
    return url, _optional_str(payload, "webhook_secret")


def _decode_mask(value: object) -> bytes:
    match = _DATA_URL.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _BadRequest("mask is required: a data URL data:image/png|jpeg|webp;base64,...")
    try:
        raw = base64.b64decode(re.sub(r"\s+", "", match.group(2)), validate=True)
    except (binascii.Error, ValueError):
        raise _BadRequest("mask is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            sane = (
                len(raw) <= _MAX_MASK_BYTES
                and image.format in ("PNG", "JPEG", "WEBP")
                and max(image.size) <= _MAX_MASK_SIDE
            )
            if sane:
                image.load()
    except Exception:  # Pillow raises many types for corrupt input; all of them mean "bad mask"
        sane = False
    if not sane:
        raise _BadRequest("mask is not a decodable PNG, JPEG or WebP image of at most 8 MB")
    return raw


# ---- pictures -----------------------------------------------------------------------------------
def _rng(seed: str) -> random.Random:
    return random.Random(hashlib.sha256(seed.encode()).digest())


def _hsv(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _landscape(seed: str, size: tuple[int, int]) -> Image.Image:
    """A recognisable scene (sky, sun, clouds, mountain ridges), so an edit is easy to spot."""
    rng, (w, h) = _rng(seed), size
    hue = rng.random()
    sky, horizon = Image.new("RGB", size, _hsv(hue, 0.75, 0.5)), Image.new("RGB", size, _hsv(hue + 0.1, 0.35, 1))
    picture = Image.composite(horizon, sky, Image.linear_gradient("L").resize(size))
    draw = ImageDraw.Draw(picture)
    r = rng.uniform(0.06, 0.11) * min(w, h)
    x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.12, 0.35) * h
    draw.ellipse((x - r, y - r, x + r, y + r), fill=_hsv(rng.uniform(0.07, 0.17), 0.7, 1.0))
    for _ in range(rng.randint(2, 4)):
        x, y, r = rng.uniform(0, w), rng.uniform(0.05, 0.35) * h, rng.uniform(0.08, 0.18) * w
        draw.ellipse((x - r, y - r / 4, x + r, y + r / 4), fill=_hsv(hue, 0.08, 0.97))
    for layer in range(3):  # far to near: lower, darker, more saturated ridges
        base, peaks = h * (0.5 + 0.14 * layer), rng.randint(3, 6)
        ridge = [(w * k / peaks, base - rng.uniform(0.04, 0.22) * h) for k in range(peaks + 1)]
        colour = _hsv(hue + 0.35 + 0.04 * layer, 0.45 + 0.1 * layer, 0.6 - 0.17 * layer)
        draw.polygon([(0, h), *ridge, (w, h)], fill=colour)
    return picture


def _redraw(parent: Image.Image, index: int, seed: str, centre: tuple[float, float]) -> Image.Image:
    """New content for variation `index`: a vivid motif of its own, blended over the parent so the
    scene still shows through, the way an inpaint keeps its context."""
    (w, h), (cx, cy) = parent.size, centre
    hue = _rng(seed).random() + index * 0.25  # a quarter turn of the colour wheel per variation
    colours = [_hsv(hue + k * 0.13, 0.9, 1.0) for k in range(3)]
    pattern = Image.new("RGB", parent.size, colours[0])
    draw = ImageDraw.Draw(pattern)
    step, reach = max(3, min(w, h) // 24), math.hypot(w, h)
    if index == 1:  # concentric rings around the selection
        for k, r in enumerate(range(int(reach), 0, -step)):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colours[k % 3])
    elif index == 2:  # diagonal stripes
        for k, x in enumerate(range(-h, w + h, step)):
            draw.polygon([(x, 0), (x + step, 0), (x + step - h, h), (x - h, h)], fill=colours[k % 3])
    elif index == 3:  # rays from the selection's centre
        box = (cx - reach, cy - reach, cx + reach, cy + reach)
        for k in range(24):
            draw.pieslice(box, k * 15, k * 15 + 15, fill=colours[k % 3])
    else:  # polka dots
        for y in range(0, h, 2 * step):
            for x in range(0, w, 2 * step):
                draw.ellipse((x, y, x + 1.5 * step, y + 1.5 * step), fill=colours[1 + (x + y) // (2 * step) % 2])
    return Image.blend(parent, pattern, 0.8)


def _binary_mask(mask_bytes: bytes, size: tuple[int, int]) -> Image.Image:
    """The provider's rule: white (>= 128) is redrawn, black is kept; scaled to the parent."""
    mask = Image.open(io.BytesIO(mask_bytes)).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= 128 else 0)


def _inpaint_variations(parent: Image.Image, mask_bytes: bytes, seed: str) -> list[Image.Image]:
    mask = _binary_mask(mask_bytes, parent.size)
    box = mask.getbbox() or (0, 0, parent.width, parent.height)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    # composite copies unmasked pixels verbatim, so they stay byte-identical to the parent
    return [Image.composite(_redraw(parent, i, seed, centre), parent, mask) for i in range(1, 5)]


def _picture_size(base: tuple[int, int], aspect_ratio: str) -> tuple[int, int]:
    """An imagine picture's size: the long side of `base`, the short one by the ratio (a multiple of 8)."""
    width, height = (int(part) for part in aspect_ratio.split(":"))
    long_side = max(base)
    if width >= height:
        return long_side, max(8, round(long_side * height / width / 8) * 8)
    return max(8, round(long_side * width / height / 8) * 8), long_side


def _grid(pictures: list[Image.Image]) -> Image.Image:
    """As Midjourney's: a 2x2 composite of the four pictures at full size, so twice as wide and high
    as each (an upscale of one of them is one quarter of its grid)."""
    w, h = pictures[0].size
    grid = Image.new("RGB", (2 * w, 2 * h))
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % 2) * w, (index // 2) * h))
    return grid


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def _pad_png(png: bytes, padding: int) -> bytes:
    """Insert a private ancillary chunk ("vaRy", which decoders skip) before IEND, so the file grows
    by exactly `padding` bytes (12 at least, a chunk's own overhead) and stays a valid PNG."""
    data = b"\0" * max(0, padding - 12)
    chunk = struct.pack(">I", len(data)) + b"vaRy" + data + struct.pack(">I", zlib.crc32(b"vaRy" + data))
    return png[:-12] + chunk + png[-12:]  # a PNG always ends with the 12-byte empty IEND chunk


# ---- HTTP plumbing ------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: ApiframeSimulator) -> None:
        super().__init__(address, _Handler)
        self.sim = sim


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ApiframeSimulator/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Per-request lines would drown the demo's and the tests' own output."""

    def _serve(self, method: str) -> None:
        try:
            body = self._read_body()
            self.server.sim._request.range = self.headers.get("Range")
            self.server.sim._request.idempotency_key = self.headers.get("Idempotency-Key")
            headers = self.headers
            response = self.server.sim._handle(
                method, self.path, headers.get("Authorization"), body, headers.get("X-API-Key")
            )
        except _BadRequest as exc:
            response = _error(400, str(exc))
        except Exception:
            log.exception("simulator failed on %s %s", method, self.path)
            response = _json(500, {})
        try:
            self._write(response)
        except OSError:  # the client hung up mid-body; nothing left to tell it
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > _MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be parsed as a next request
            raise _BadRequest("Invalid request: bad or too large Content-Length")
        return self.rfile.read(int(length))

    def _write(self, response: _Response) -> None:
        if response.reset:  # the request was taken; its answer never leaves: the connection just closes
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        body = response.body[: len(response.body) // 2] if response.truncate else response.body
        if response.bytes_per_second:
            sim = self.server.sim
            resets = sim._resets
            chunk = max(1, int(response.bytes_per_second / 20))  # about 20 writes a second
            self.wfile.write(body[: response.throttle_after])
            for start in range(response.throttle_after, len(body), chunk):
                if sim._resets != resets or sim._stopping.is_set():
                    # A trickle (hours, at a few bytes a second) must not outlive its test.
                    self.close_connection = True
                    return
                self.wfile.write(body[start : start + chunk])
                time.sleep(chunk / response.bytes_per_second)
        else:
            self.wfile.write(body)
        if response.truncate:
            self.close_connection = True  # the promised Content-Length never arrives


# ---- command line -------------------------------------------------------------------------------
_FLAG_MESSAGES = {"reject_inpaint": "Invalid request", "fail_task": "simulated task failure"}  # bare flags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run the APIFRAME simulator in the foreground.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--api-key", default="sim-key")
    parser.add_argument("--api-version", choices=("v1", "v2"), default="v1", help="the APIFRAME generation to speak")
    parser.add_argument("--step-delay", type=float, default=0.5, help="seconds between progress steps")
    parser.add_argument("--progress-steps", default="25,50,75", help="comma-separated percentages")
    parser.add_argument("--image-size", default="512x512", help="WIDTHxHEIGHT of parent pictures")
    faults = parser.add_argument_group("faults (all off by default) and the account's answers")
    for name, (base, _) in _FAULT_KINDS.items():
        flag = "--" + name.replace("_", "-")
        if base is bool:
            faults.add_argument(flag, action="store_true")
        elif name == "drop_webhooks":
            faults.add_argument(flag, choices=("all", "final"))
        elif name == "partial_result":
            faults.add_argument(flag, choices=sorted(_PARTIAL_SHAPES))
        elif base is str:  # a bare flag uses a stock message
            faults.add_argument(flag, nargs="?", const=_FLAG_MESSAGES[name], metavar="MESSAGE")
        else:
            faults.add_argument(flag, type=base)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.image_size.lower().split("x"))
        steps = tuple(int(v) for v in args.progress_steps.split(",") if v.strip())
    except ValueError:
        parser.error("--image-size must look like 512x512 and --progress-steps like 25,50,75")
    chosen = {name: getattr(args, name) for name in _FAULT_KINDS if getattr(args, name) not in (None, False)}
    sim = ApiframeSimulator(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        step_delay=args.step_delay,
        progress_steps=steps,
        image_size=(width, height),
        api_version=args.api_version,
    )
    try:
        sim.set_faults(**chosen)
    except ValueError as exc:
        parser.error(str(exc))
    # Ctrl-C must stop it also when started in the background by a script, which inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    url = sim.start()
    try:  # from here a Ctrl-C, however early, stops the server cleanly
        print(f"APIFRAME simulator on {url} (api key: {args.api_key})", flush=True)
        if chosen:
            print(f"faults: {chosen}", flush=True)
        print("control: GET /_sim/stats, POST /_sim/faults, POST /_sim/reset; Ctrl-C stops", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
