"""Typed settings, read once from the environment (the only module that looks at os.environ)."""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from vary_region.core.credits import BudgetPolicy

DEFAULT_IMAGE_HOSTS = "cdn.apiframe.pro,cdn.apiframe.ai,cdn2.apiframe.ai"
# Provider tasks in flight at once when MAX_ACTIVE_TASKS is left empty and the account says nothing.
DEFAULT_MAX_ACTIVE_TASKS = 10
# Each API generation's base URL and its price list (credits: imagine, upscale, inpaint): v1's
# fast mode, and v2's generate / upsample / inpaint, which v2 refunds when a job fails.
GENERATIONS = {
    "v1": ("https://api.apiframe.pro", (4, 2, 4)),
    "v2": ("https://api.apiframe.ai", (16, 4, 16)),
}


class SettingsError(ValueError):
    """A setting is missing or malformed: a deployment mistake, never a job's fault."""


@dataclass(frozen=True)
class ImageOrigin:
    """One entry of the image-host allowlist.

    A bare host name means `https://<host>` on the default port. An explicit `http://` origin is
    accepted only for a loopback host: that is how the local stack admits its simulator and nothing else.
    """

    scheme: str
    host: str
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> ImageOrigin:
        entry = entry.strip().lower()
        if "://" not in entry:
            return cls(scheme="https", host=entry)
        parts = urlsplit(entry)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise SettingsError(f"ALLOWED_IMAGE_HOSTS entry {entry!r} is not a host or an origin")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise SettingsError(f"ALLOWED_IMAGE_HOSTS entry {entry!r}: plain http is allowed on loopback only")
        return cls(scheme=parts.scheme, host=parts.hostname, port=parts.port)

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(self.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MaskSource:
    """One MASK_SOURCES entry: a bucket, or `bucket/prefix`, read as a folder (keys under `prefix/`),
    exactly as the submit function's IAM grants it (`arn:...:s3:::<entry>/*`)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, entry: str) -> MaskSource:
        bucket, _, prefix = entry.strip().removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        if not bucket or "*" in entry or ".." in prefix.split("/"):
            raise SettingsError(f"MASK_SOURCES entry {entry!r} is not a bucket or bucket/prefix")
        return cls(bucket, prefix)

    def holds(self, bucket: str, key: str) -> bool:
        if bucket != self.bucket or ".." in key.split("/"):
            return False
        return not self.prefix or key.startswith(self.prefix + "/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"


@dataclass(frozen=True)
class Settings:
    """The deployment's settings (defaults are the documented ones; see Settings.from_env)."""

    jobs_bucket: str
    jobs_table: str
    apiframe_base_url: str = "https://api.apiframe.pro"
    apiframe_api_version: str = "v1"  # v1 (api.apiframe.pro) or v2 (api.apiframe.ai): see provider/port.py
    api_key_secret_id: str = ""
    api_key_parameter: str = ""
    webhook_base_url: str = ""
    allowed_image_origins: tuple[ImageOrigin, ...] = field(
        default_factory=lambda: tuple(ImageOrigin.parse(h) for h in DEFAULT_IMAGE_HOSTS.split(","))
    )
    inbox_prefix: str = "inbox/"
    results_prefix: str = "results/"
    max_mask_bytes: int = 8 * 1024 * 1024
    max_spec_bytes: int = 256 * 1024
    max_prompt_chars: int = 4000
    max_metadata_bytes: int = 4096
    max_image_bytes: int = 50 * 1024 * 1024
    image_timeout_seconds: float = 20.0
    image_copy_attempts: int = 3
    copy_failures_before_failed: int = 3
    submit_retry_budget_seconds: float = 20.0
    apiframe_connect_timeout: float = 3.05
    apiframe_read_timeout: float = 15.0
    reconcile_quiet_seconds: int = 300
    submit_ambiguity_window_seconds: int = 3600
    max_task_age_seconds: int = 6 * 3600
    stale_receipt_seconds: int = 86400
    # The longest a job may be held back, or a chain wait between two stages, before it ends.
    max_hold_seconds: int = 7 * 86400
    job_ttl_days: int = 90
    # None (MAX_ACTIVE_TASKS left empty): v1 takes 10, v2 the account's own maxConcurrentJobs (GET /v2/me).
    max_active_tasks: int | None = None
    submit_queue_url: str = ""
    hold_delay_seconds: int = 30
    completion_queue_url: str = ""
    completion_attempts: int = 5
    completion_retry_delay_seconds: int = 30
    result_fetch_attempts: int = 3
    result_refetch_delay_seconds: float = 2.0
    reconcile_batch_limit: int = 2000
    # Credits per task (APIFRAME's fast-mode price list), written into result.json per stage.
    credits_imagine: int = 4
    credits_upscale: int = 2
    credits_inpaint: int = 4
    # The budget guard: credits per UTC day and month (0: no limit), and what a job over it does.
    daily_credit_limit: int = 0
    monthly_credit_limit: int = 0
    over_budget: str = "hold"
    return_failed_credits: bool = True
    # The provider account's balance, read at most this often per container (0: never read).
    balance_cache_seconds: int = 60
    # Where job state changes are published (EventBridge bus name or ARN).
    event_bus_name: str = "default"
    # The state machines whose callback tasks a job may answer (CallerStateMachineArns): none, and a
    # job carrying a `task_token` is refused, since the publisher has no permission to answer it.
    caller_state_machine_arns: tuple[str, ...] = ()
    # Where else an `s3://` mask may be read (MaskSources), beside the jobs bucket's inbox.
    mask_sources: tuple[MaskSource, ...] = ()

    @property
    def mask_locations(self) -> tuple[MaskSource, ...]:
        """The places an `s3://` mask may come from: the jobs bucket's inbox, and MASK_SOURCES."""
        return (MaskSource(self.jobs_bucket, self.inbox_prefix.rstrip("/")), *self.mask_sources)

    @property
    def seconds_for_paid_call(self) -> float:
        """The longest a paid submission can take (its retries and their time-outs, and the writes
        around it): an invocation with less left must not claim a stage."""
        return self.submit_retry_budget_seconds + self.apiframe_read_timeout + self.apiframe_connect_timeout + 5

    def credits_of(self, stage: str) -> int:
        return {"imagine": self.credits_imagine, "upscale": self.credits_upscale}.get(stage, self.credits_inpaint)

    @property
    def budget_policy(self) -> BudgetPolicy:
        from vary_region.core.credits import BudgetPolicy, OverBudgetAction

        return BudgetPolicy(
            daily_limit=self.daily_credit_limit,
            monthly_limit=self.monthly_credit_limit,
            over_budget=OverBudgetAction(self.over_budget),
            return_failed_credits=self.return_failed_credits,
        )

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SettingsError(f"environment variable {name} is required")
            return value

        def number(name: str, default: float, cast: type = int) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r} is not a number") from exc
            if not (value > 0 and math.isfinite(value)):
                raise SettingsError(f"{name} must be a positive number")
            return value

        def count(name: str, default: int) -> int:
            """A whole number, 0 allowed (a limit of 0 means none)."""
            raw = env.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit():
                raise SettingsError(f"{name}={raw!r} is not a whole number of 0 or more")
            return int(raw)

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = env.get(name, "").strip().lower() or default
            if value not in allowed:
                raise SettingsError(f"{name}={value!r} must be one of {', '.join(allowed)}")
            return value

        hosts = env.get("ALLOWED_IMAGE_HOSTS", "").strip() or DEFAULT_IMAGE_HOSTS
        defaults = cls(jobs_bucket="-", jobs_table="-")
        version = choice("APIFRAME_API_VERSION", defaults.apiframe_api_version, ("v1", "v2"))
        base_url, prices = GENERATIONS[version]
        return cls(
            jobs_bucket=required("JOBS_BUCKET"),
            jobs_table=required("JOBS_TABLE"),
            apiframe_api_version=version,
            apiframe_base_url=(env.get("APIFRAME_BASE_URL", "").strip() or base_url).rstrip("/"),
            api_key_secret_id=env.get("APIFRAME_API_KEY_SECRET_ID", "").strip(),
            api_key_parameter=env.get("APIFRAME_API_KEY_PARAMETER", "").strip(),
            webhook_base_url=env.get("WEBHOOK_BASE_URL", "").strip().rstrip("/"),
            allowed_image_origins=tuple(ImageOrigin.parse(h) for h in hosts.split(",") if h.strip()),
            max_image_bytes=int(number("MAX_IMAGE_BYTES", defaults.max_image_bytes)),
            reconcile_quiet_seconds=int(number("RECONCILE_QUIET_SECONDS", defaults.reconcile_quiet_seconds)),
            submit_ambiguity_window_seconds=int(
                number("SUBMIT_AMBIGUITY_WINDOW_SECONDS", defaults.submit_ambiguity_window_seconds)
            ),
            job_ttl_days=int(number("JOB_TTL_DAYS", defaults.job_ttl_days)),
            max_task_age_seconds=int(number("MAX_TASK_AGE_SECONDS", defaults.max_task_age_seconds)),
            max_hold_seconds=int(number("MAX_HOLD_SECONDS", defaults.max_hold_seconds)),
            max_active_tasks=int(number("MAX_ACTIVE_TASKS", 0)) or None,
            submit_queue_url=env.get("SUBMIT_QUEUE_URL", "").strip(),
            hold_delay_seconds=int(number("HOLD_DELAY_SECONDS", defaults.hold_delay_seconds)),
            completion_queue_url=env.get("COMPLETION_QUEUE_URL", "").strip(),
            completion_retry_delay_seconds=int(
                number("COMPLETION_RETRY_DELAY_SECONDS", defaults.completion_retry_delay_seconds)
            ),
            result_refetch_delay_seconds=float(
                number("RESULT_REFETCH_DELAY_SECONDS", defaults.result_refetch_delay_seconds, float)
            ),
            reconcile_batch_limit=int(number("RECONCILE_BATCH_LIMIT", defaults.reconcile_batch_limit)),
            credits_imagine=int(number("CREDITS_IMAGINE", prices[0])),
            credits_upscale=int(number("CREDITS_UPSCALE", prices[1])),
            credits_inpaint=int(number("CREDITS_INPAINT", prices[2])),
            daily_credit_limit=count("DAILY_CREDIT_LIMIT", defaults.daily_credit_limit),
            monthly_credit_limit=count("MONTHLY_CREDIT_LIMIT", defaults.monthly_credit_limit),
            over_budget=choice("OVER_BUDGET", defaults.over_budget, ("hold", "reject")),
            return_failed_credits=choice("RETURN_FAILED_CREDITS", "true", ("true", "false")) == "true",
            balance_cache_seconds=count("BALANCE_CACHE_SECONDS", defaults.balance_cache_seconds),
            event_bus_name=env.get("EVENT_BUS_NAME", "").strip() or defaults.event_bus_name,
            caller_state_machine_arns=tuple(_entries(env.get("CALLER_STATE_MACHINE_ARNS", ""))),
            mask_sources=tuple(MaskSource.parse(entry) for entry in _entries(env.get("MASK_SOURCES", ""))),
            submit_retry_budget_seconds=float(
                number("SUBMIT_RETRY_BUDGET_SECONDS", defaults.submit_retry_budget_seconds, float)
            ),
            image_timeout_seconds=float(number("IMAGE_TIMEOUT_SECONDS", defaults.image_timeout_seconds, float)),
            apiframe_read_timeout=float(number("APIFRAME_READ_TIMEOUT_SECONDS", defaults.apiframe_read_timeout, float)),
        )


def _entries(raw: str) -> list[str]:
    """A comma-separated list (CloudFormation joins a CommaDelimitedList so), blanks left out."""
    return [entry.strip() for entry in raw.split(",") if entry.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings, read on first use and kept for its lifetime."""
    return Settings.from_env()
