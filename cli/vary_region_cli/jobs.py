"""What the commands do with a job, over S3 and DynamoDB only: upload it into inbox/, read its
item, follow it to a final state, and download results/<job-id>/."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from vary_region.core import strict_json
from vary_region.core.job import JobStatus
from vary_region.core.keys import MASK_EXTENSIONS, MAX_JOB_ID_CHARS, is_valid_job_id
from vary_region.store.schema import JOBS_BY_DAY_INDEX, plain

from vary_region_cli.config import CliError, Target

if TYPE_CHECKING:
    from vary_region_cli.events import JobEvents
from vary_region_cli.masks import EXTENSIONS, data_url

INBOX = "inbox/"
RESULTS = "results/"
FINAL = frozenset(status for status in JobStatus if status.is_final)
# The pipeline's bookkeeping on a job's item (claims, leases, slots, index keys, TTL, the webhook
# secret's hash, a caller's task token): nothing a user acts on, and nothing a shared screenshot
# should show. `status --raw` has it.
INTERNAL_FIELDS = frozenset(
    {
        "active",
        "copy_lease",
        "copy_lease_until",
        "created_day",
        "expires_at",
        "holds_slot",
        "submit_claim",
        "submit_claimed_at",
        "task_token",
        "webhook_secret_hash",
        "write_id",
    }
)
# Why a valid job waits in the queue (`held_reason`, written by the submit function), in words.
HELD_REASONS = {
    "PROVIDER_SLOTS_FULL": "every provider slot is taken, MaxActiveTasks tasks are in flight",
    "PROVIDER_UNAVAILABLE": "APIFRAME did not take the request for now: a rate limit, an outage, or unreachable",
    "PARENT_RUNNING": "its parent task is still running",
    "PARENT_UNAVAILABLE": "its parent task or image cannot be read for now: Fetch or the image host is unreachable",
    "BUDGET_EXCEEDED": "the daily or monthly credit limit has no room left for its chain",
    "PROVIDER_BALANCE_LOW": "the APIFRAME account's credits cannot cover its chain",
}


# --- job ids ---------------------------------------------------------------------------------


def new_job_id(now: datetime | None = None) -> str:
    """Readable and unique enough: job-20261126-120501-ab12cd (UTC time, 6 random hex digits)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"job-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_job_id(job_id: str) -> str:
    """The pipeline's own rule (vary_region.core.keys): what it would ignore is refused here."""
    if not is_valid_job_id(job_id):
        raise CliError(
            f"invalid job id {job_id!r}: use 1..{MAX_JOB_ID_CHARS} printable characters,"
            " no slashes or control characters"
        )
    return job_id


# --- submit ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    key: str
    content_type: str
    size: int


def job_document(parent_task_id: str | None, prompt: str | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
    document: dict[str, Any] = {} if parent_task_id is None else {"parent_task_id": parent_task_id}
    if prompt:
        document["prompt"] = prompt
    if metadata:
        document["metadata"] = metadata
    return document


def parse_metadata(text: str | None, name: str = "--metadata") -> dict[str, Any] | None:
    """A job's metadata as the pipeline will read it, or CliError for what it would reject."""
    if text is None:
        return None
    try:
        value = strict_json.loads(text)
    except strict_json.JsonRefused as exc:  # the pipeline would reject the job for it (SPEC_INVALID_JSON)
        raise CliError(f"{name} is not valid JSON ({exc.reason})") from None
    if not isinstance(value, dict):
        raise CliError(f'{name} must be a JSON object, like \'{{"customer": "acme"}}\'')
    return value


def submit_job(
    target: Target,
    job_id: str,
    document: dict[str, Any],
    mask: bytes | None,
    mask_type: str,
    *,
    inline: bool = False,
) -> list[Upload]:
    """Upload the job: job.json first, then the mask (the pipeline starts when both are there),
    or a single inbox/<job-id>.json with the mask inline as a data URL. mask=None: the document
    gives the mask as regions, and is the whole job."""
    bucket = target.require_bucket()
    check_job_id(job_id)
    existing = existing_job_keys(target, job_id)
    if existing:
        raise CliError(f"job id {job_id!r} is already used (s3://{bucket}/{existing[0]} exists); choose another")
    if mask is None:
        key = f"{INBOX}{job_id}.json" if inline else f"{INBOX}{job_id}/job.json"
        files = [(key, job_file_bytes(document), "application/json")]
    elif inline:
        files = [
            (
                f"{INBOX}{job_id}.json",
                job_file_bytes(document | {"mask": data_url(mask_type, mask)}),
                "application/json",
            )
        ]
    else:
        files = [
            (f"{INBOX}{job_id}/job.json", job_file_bytes(document), "application/json"),
            (f"{INBOX}{job_id}/mask.{EXTENSIONS[mask_type]}", mask, mask_type),
        ]
    uploads = []
    for key, body, content_type in files:
        target.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        uploads.append(Upload(key, content_type, len(body)))
    return uploads


def existing_job_keys(target: Target, job_id: str) -> list[str]:
    """Objects that already belong to this job id, in the inbox or the results."""
    bucket = target.require_bucket()
    found: list[str] = []
    for prefix, exact in (
        (f"{INBOX}{job_id}/", False),
        (f"{INBOX}{job_id}.json", True),
        (f"{RESULTS}{job_id}/", False),
    ):
        page = target.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        found += [o["Key"] for o in page.get("Contents", []) if not exact or o["Key"] == prefix]
    return found


def job_file_bytes(document: dict[str, Any]) -> bytes:
    """job.json as `submit` uploads it (and the editor's Save writes it)."""
    return (json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


# --- the job item ----------------------------------------------------------------------------


def get_item(target: Target, job_id: str) -> dict[str, Any] | None:
    from boto3.dynamodb.types import TypeDeserializer

    response = target.dynamodb.get_item(
        TableName=target.require_table(), Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )
    item = response.get("Item")
    if item is None:
        return None
    deserializer = TypeDeserializer()
    return plain({name: deserializer.deserialize(value) for name, value in item.items()})


def require_item(target: Target, job_id: str) -> dict[str, Any]:
    item = get_item(target, job_id)
    if item is None:
        raise CliError(f"job {job_id!r} not found in table {target.require_table()}")
    return item


def public_fields(item: dict[str, Any]) -> dict[str, Any]:
    """The item as a user reads it: without the pipeline's bookkeeping."""
    return {name: value for name, value in item.items() if name not in INTERNAL_FIELDS}


def waiting_for(target: Target, job_id: str, item: dict[str, Any] | None) -> str | None:
    """What a RECEIVED job waits for when one of its two files is missing from its inbox folder
    (the pipeline starts a job only when both are there), or None."""
    if item is None or item.get("status") != "RECEIVED" or not target.bucket:
        return None
    if item.get("waiting_for"):
        return str(item["waiting_for"])  # the pipeline's own word
    if item.get("submit_claim") or item.get("held_at"):
        return None  # whole (a job.json with regions needs no mask file): claimed, or held for a slot
    prefix = f"{INBOX}{job_id}/"
    page = target.s3.list_objects_v2(Bucket=target.bucket, Prefix=prefix, MaxKeys=100)
    names = {o["Key"][len(prefix) :] for o in page.get("Contents", [])}
    has_spec = "job.json" in names
    has_mask = any(
        stem == "mask" and ext.lower() in MASK_EXTENSIONS for stem, _, ext in (n.rpartition(".") for n in names)
    )
    # A job.json alone may be a whole job (its mask given as regions): only the pipeline, which has
    # read it, can say a mask file is missing (`waiting_for` on the item, above).
    if has_mask and not has_spec:
        return f"waiting for the job file {prefix}job.json"
    return None


def held_note(item: dict[str, Any] | None, now: datetime | None = None) -> str | None:
    """Why an open job is held back in the queue, in words, and until when: for the budget, the
    start of its next period (`held_until`); otherwise about when it is tried again. None: not held."""
    if item is None or item.get("status") in FINAL or not item.get("held_at") or item.get("waiting_for"):
        return None
    code = item.get("held_reason")
    if not code:
        return "held back in the queue"  # held before reasons were recorded
    note = f"held: {HELD_REASONS.get(str(code), 'held back in the queue')} ({code})"
    until = _moment(item.get("held_until"))
    if until is None:
        return note
    shown = f"{until:%Y-%m-%dT%H:%M:%SZ}"
    if (now or datetime.now(UTC)) >= until:
        # Only a change of cause or of the budget's period is written: a job held for a slot or
        # the balance keeps its first retry time while it is tried again and again.
        return f"{note}; tried again regularly since {shown}"
    if code == "BUDGET_EXCEEDED":
        # A day that opens on the 1st opens a month too: the later of the two full periods is named.
        period = "month" if until.day == 1 else "day"
        return f"{note}; until {shown}, when the next UTC {period}'s budget opens (sooner if credits are given back)"
    return f"{note}; next try about {shown}"


def _moment(value: Any) -> datetime | None:
    """The pipeline's ISO 8601 UTC timestamps (2026-12-02T00:00:00.000Z) as datetimes; None if not one."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment is not None and moment.tzinfo is not None else None


def list_jobs(
    target: Target, limit: int, status: str | None = None, *, days: int = 90, today: datetime | None = None
) -> list[dict[str, Any]]:
    """The most recent jobs, newest first: the `jobs-by-day` index, one UTC day at a time, back
    from today until `limit` jobs are found or `days` days were read (no table scan)."""
    from datetime import timedelta

    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    day = (today or datetime.now(UTC)).date()
    items: list[dict[str, Any]] = []
    for _ in range(days):
        kwargs: dict[str, Any] = {
            "TableName": target.require_table(),
            "IndexName": JOBS_BY_DAY_INDEX,
            "KeyConditionExpression": "created_day = :day",
            "ExpressionAttributeValues": {":day": {"S": day.isoformat()}},
            "ScanIndexForward": False,
        }
        if status:
            kwargs["FilterExpression"] = "#status = :status"
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
            kwargs["ExpressionAttributeValues"][":status"] = {"S": status}
        for page in target.dynamodb.get_paginator("query").paginate(
            **kwargs, PaginationConfig={"PageSize": min(100, max(limit, 10))}
        ):
            items += [plain({k: deserializer.deserialize(v) for k, v in raw.items()}) for raw in page.get("Items", [])]
            if len(items) >= limit:
                return items[:limit]
        day -= timedelta(days=1)
    return items


# --- watch -----------------------------------------------------------------------------------


# What a new line of `watch` is printed for: progress, and what the job waits for (a file, or its hold).
_WATCHED = ("status", "stage", "percentage", "waiting_for", "held_at", "held_reason", "held_until")


@dataclass(frozen=True)
class WatchResult:
    status: str  # a final status, or "TIMEOUT"
    item: dict[str, Any] | None
    elapsed: float
    waiting_for: str | None = None  # at a timeout: the file a RECEIVED job still waits for


def progress_bar(percentage: float, width: int = 24) -> str:
    filled = round(max(0.0, min(100.0, percentage)) / 100 * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def status_line(
    item: dict[str, Any] | None, elapsed: float, waiting: str | None = None, now: datetime | None = None
) -> str:
    if item is None:
        return f"{progress_bar(0)}    -  WAITING     {elapsed:5.1f}s  (the pipeline has not picked the job up yet)"
    status = str(item.get("status", "?"))
    pct = item.get("percentage")
    pct_value = float(pct) if isinstance(pct, int | float) else (100.0 if status == "COMPLETED" else 0.0)
    pct_text = f"{pct_value:3.0f}%" if pct is not None or status == "COMPLETED" else "   -"
    task = f"  task {item['task_id']}" if item.get("task_id") else ""
    if item.get("stage") and (item.get("stage") != "inpaint" or item.get("upscale_task_id")):
        task = f"  stage {item['stage']}{task}"  # a chained job: say which of its tasks this is
    error = item.get("error") if isinstance(item.get("error"), dict) else {}
    note = f"  (needs attention: {error.get('code')})" if item.get("needs_attention") and error else ""
    if waiting:
        note += f"  ({waiting})"
    held = held_note(item, now)
    if held:
        note += f"  ({held})"
    return f"{progress_bar(pct_value)} {pct_text}  {status:<10}  {elapsed:5.1f}s{task}{note}"


def watch_job(
    target: Target,
    job_id: str,
    *,
    timeout: float | None = None,
    interval: float = 0.5,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchResult:
    """Poll the job's item until it is final, showing a progress bar: redrawn in place on a
    terminal, one line per change otherwise."""
    out = out or sys.stdout
    tty = out.isatty()
    started = clock()
    shown: object = object()  # the (status, percentage) last printed; nothing printed yet
    inbox_checked = False
    waiting: str | None = None
    while True:
        item = get_item(target, job_id)
        elapsed = clock() - started
        if item is None and not inbox_checked:
            inbox_checked = True
            if target.bucket and not existing_job_keys(target, job_id):
                raise CliError(
                    f"job {job_id!r} not found: no item in table {target.table} "
                    f"and nothing under s3://{target.bucket}/{INBOX}"
                )
        state = None if item is None else tuple(item.get(k) for k in _WATCHED)
        if state != shown:  # one inbox listing per change of state (the pipeline's word included), not per poll
            waiting = waiting_for(target, job_id, item)
        line = status_line(item, elapsed, waiting)
        final = item is not None and item.get("status") in FINAL
        if tty:
            columns = shutil.get_terminal_size((100, 20)).columns
            held = held_note(item)
            if held and state != shown:  # whole, once per change: the redrawn line is cut to the terminal's width
                out.write("\r" + held.ljust(columns - 1) + "\n")
            out.write("\r" + line[: columns - 1].ljust(columns - 1))
            if final:
                out.write("\n")
        elif state != shown:
            out.write(line + "\n")
        shown = state
        out.flush()
        if final:
            assert item is not None
            return WatchResult(str(item["status"]), item, elapsed)
        if timeout is not None and elapsed >= timeout:
            if tty:
                out.write("\n")
            return WatchResult("TIMEOUT", item, elapsed, waiting_for(target, job_id, item))
        sleep(interval if timeout is None else max(0.0, min(interval, timeout - elapsed)))


def watch_job_by_events(
    target: Target,
    job_id: str,
    events: JobEvents,
    *,
    timeout: float | None = None,
    check_every: float = 10.0,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WatchResult:
    """Like watch_job, but each line is a state-change event of the job (the item is read at the
    start and every `check_every` seconds, in case an event came before the subscription)."""
    from vary_region_cli.events import newer

    out = out or sys.stdout
    started = clock()
    shown: dict[str, Any] | None = None  # the state last printed: an item, or an event's detail
    next_check = started
    while True:
        elapsed = clock() - started
        states: list[dict[str, Any]] = []
        if clock() >= next_check:
            item = get_item(target, job_id)
            if item is not None and (shown is None or item.get("status") in FINAL):
                states.append(item)
            next_check = clock() + check_every
        left = check_every if timeout is None else min(check_every, max(0.0, timeout - elapsed))
        states += [detail for detail in events.wait(min(left, max(0.0, next_check - clock())))]
        for state in states:
            if "sequence" in state and not newer(state, shown if shown and "sequence" in shown else None):
                continue  # an older event, delivered late
            shown = state
            out.write(status_line(_as_item(state), clock() - started) + "  (event)" * ("sequence" in state) + "\n")
            out.flush()
            if state.get("status") in FINAL:
                return WatchResult(str(state["status"]), _as_item(state), clock() - started)
        if timeout is not None and clock() - started >= timeout:
            return WatchResult("TIMEOUT", _as_item(shown) if shown else None, clock() - started)


def _as_item(state: dict[str, Any]) -> dict[str, Any]:
    """An event's detail in the item's shape (`results` is the item's `result`)."""
    if "sequence" not in state:
        return state
    # A held job's event carries `held_reason` (and `held_until`), never `held_at`.
    return dict(
        state, result=state.get("results"), held_at=state.get("updated_at") if state.get("held_reason") else None
    )


# --- get -------------------------------------------------------------------------------------


def result_keys(target: Target, job_id: str) -> list[str]:
    bucket = target.require_bucket()
    keys: list[str] = []
    for page in target.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{RESULTS}{job_id}/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def download_results(target: Target, job_id: str, out_dir: Path) -> list[Path]:
    """Everything under results/<job-id>/ into out_dir/<job-id>/; returns the local paths."""
    check_job_id(job_id)
    bucket = target.require_bucket()
    item = get_item(target, job_id) if target.table else None
    if item is not None and item.get("status") not in FINAL:
        # Result images are copied before the job completes: never hand out half a result.
        pct = f" {item['percentage']}%" if item.get("percentage") is not None else ""
        waiting = waiting_for(target, job_id, item) or held_note(item)
        raise CliError(
            f"job {job_id!r} has no results yet (status {item.get('status')}{pct})"
            + (f", {waiting}" if waiting else "")
        )
    keys = result_keys(target, job_id)
    if not keys:
        if item is not None:
            raise CliError(
                f"job {job_id!r} is {item.get('status')} but nothing is under s3://{bucket}/{RESULTS}{job_id}/"
            )
        raise CliError(f"job {job_id!r} not found: nothing under s3://{bucket}/{RESULTS}{job_id}/")
    destination = out_dir / job_id
    plan: list[tuple[str, Path]] = []
    for key in keys:
        relative = PurePosixPath(key[len(f"{RESULTS}{job_id}/") :])
        if not relative.parts or any(part in ("", ".", "..") for part in relative.parts):
            continue  # never write outside the destination
        plan.append((key, destination.joinpath(*relative.parts)))
    for _, path in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
    s3 = target.s3
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda job: s3.download_file(bucket, job[0], str(job[1])), plan))
    return [path for _, path in plan]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def short_time(value: Any) -> str:
    """2026-11-26T12:05:01.123Z -> 2026-11-26 12:05:01"""
    text = str(value or "")
    return text[:19].replace("T", " ") if len(text) >= 19 else (text or "-")
