"""Builds the domain objects from settings. Handlers call these once per container (at import),
so AWS clients and HTTP sessions are reused across invocations.

Each builder imports the domain modules it needs itself: a handler's import (its cold start) then
loads only its own part of the package, not the other functions' code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from vary_region.aws.job_files import JobFiles
from vary_region.core.job import utc_now
from vary_region.settings import DEFAULT_MAX_ACTIVE_TASKS, Settings, SettingsError
from vary_region.store.job_table import JobTable

if TYPE_CHECKING:
    from vary_region.aws.completion_queue import CompletionQueue
    from vary_region.completion.worker import JobCompleter
    from vary_region.endings import JobEndings
    from vary_region.provider.apiframe_v1 import ApiframeClient
    from vary_region.provider.port import ProviderWebhooks
    from vary_region.publisher.publisher import StateChangePublisher
    from vary_region.reconciler.reconciler import Reconciler
    from vary_region.submit.parent import ParentReader
    from vary_region.submit.submitter import JobSubmitter
    from vary_region.webhook.receiver import WebhookReceiver

# Retries for AWS calls are botocore's job (standard mode); the pool fits five parallel image copies.
_AWS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=20)


class LazyClient:
    """Stands in for a boto3 client or table and creates it on first use.

    Still one client per container, reused across invocations; but creating clients (loading their
    service models) no longer lengthens the import of every handler, and a path that never needs a
    client (a forged webhook, say) never pays for it.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            with self._lock:  # the image copier's threads may ask at the same moment
                if self._client is None:
                    self._client = self._factory()
        return getattr(self._client, name)


def s3_client() -> Any:
    return LazyClient(lambda: boto3.client("s3", config=_AWS_CONFIG))


def task_store(settings: Settings, max_active_tasks: int | Callable[[], int] | None = None) -> JobTable:
    """The jobs table. Only the submit function claims provider slots, so only it passes the account's
    limit (provider_slot_limit); the other functions never build a provider client for it."""
    table = LazyClient(lambda: boto3.resource("dynamodb", config=_AWS_CONFIG).Table(settings.jobs_table))
    return JobTable(
        table,
        ttl_days=settings.job_ttl_days,
        max_active_tasks=max_active_tasks or settings.max_active_tasks or DEFAULT_MAX_ACTIVE_TASKS,
        budget=settings.budget_policy,
    )


def provider_slot_limit(settings: Settings) -> int | Callable[[], int]:
    """MAX_ACTIVE_TASKS, or, under v2 with it left empty, the account's `maxConcurrentJobs`: read on
    the first claim (never at cold start), kept for the container's life, and 10 when unreadable."""
    if settings.max_active_tasks is not None:
        return settings.max_active_tasks
    if settings.apiframe_api_version != "v2":
        return DEFAULT_MAX_ACTIVE_TASKS
    from vary_region.provider.account_limit import AccountLimit
    from vary_region.provider.apiframe_v2 import ApiframeV2Client

    client = free_calls_client(settings)
    assert isinstance(client, ApiframeV2Client)
    return AccountLimit(client.max_concurrent_jobs, fallback=DEFAULT_MAX_ACTIVE_TASKS)


def apiframe_client(settings: Settings) -> ApiframeClient:
    """The paid calls' client, of the stack's API generation (APIFRAME_API_VERSION)."""
    from vary_region.provider.apiframe_v1 import RetryPolicy

    return _provider_client(settings, RetryPolicy(budget_seconds=settings.submit_retry_budget_seconds))


def free_calls_client(settings: Settings) -> ApiframeClient:
    """A client of its own for the free reads (Fetch, the account): retried on every transient answer
    within a shorter budget than a paid call's, so an outage holds the job instead of eating the
    invocation."""
    from vary_region.provider.apiframe_v1 import RetryPolicy

    return _provider_client(settings, RetryPolicy(budget_seconds=min(10.0, settings.submit_retry_budget_seconds)))


def _provider_client(settings: Settings, retry: Any) -> ApiframeClient:
    from vary_region.provider.api_key import api_key_reader
    from vary_region.provider.apiframe_v1 import ApiframeClient

    client_type: type[ApiframeClient] = ApiframeClient
    if settings.apiframe_api_version == "v2":
        from vary_region.provider.apiframe_v2 import ApiframeV2Client

        client_type = ApiframeV2Client
    return client_type(
        settings.apiframe_base_url,
        api_key_reader(settings),  # one cached secret per container: Powertools caches per process
        connect_timeout=settings.apiframe_connect_timeout,
        read_timeout=settings.apiframe_read_timeout,
        retry=retry,
    )


def provider_webhooks(settings: Settings) -> ProviderWebhooks:
    """How the stack's API generation authenticates and words its webhooks."""
    from vary_region.provider.webhook_auth import SharedSecretVerifier, SignedWebhookVerifier

    if settings.apiframe_api_version == "v2":
        from vary_region.provider.api_key import api_key_reader

        return SignedWebhookVerifier(api_key_reader(settings))
    return SharedSecretVerifier()


def parent_reader(settings: Settings, client: ApiframeClient | None = None) -> ParentReader:
    from vary_region.submit.parent import ParentReader

    return ParentReader(
        (client or free_calls_client(settings)).fetch,
        settings.allowed_image_origins,
        timeout_seconds=min(10.0, settings.image_timeout_seconds),
    )


def job_submitter(settings: Settings) -> JobSubmitter:
    from vary_region.aws.submit_queue import SubmitQueue
    from vary_region.submit.submitter import JobSubmitter

    hold = None
    if settings.submit_queue_url:
        queue = SubmitQueue(sqs_client(), settings.submit_queue_url, settings.hold_delay_seconds)
        hold = queue.hold
    from vary_region.provider.balance import ProviderBalance

    files = JobFiles(s3_client(), settings.jobs_bucket)
    free_calls = free_calls_client(settings)
    return JobSubmitter(
        settings,
        task_store(settings, provider_slot_limit(settings)),
        files,
        apiframe_client(settings),
        parent_reader(settings, free_calls),
        hold=hold,
        balance=ProviderBalance(free_calls.account_credits, settings.balance_cache_seconds),
    )


def submit_wake(settings: Settings) -> Callable[[str], None] | None:
    """Hands a chained job's next stage to the submit function through its queue."""
    from vary_region.aws.submit_queue import SubmitQueue

    if not settings.submit_queue_url:
        return None
    return SubmitQueue(sqs_client(), settings.submit_queue_url, settings.hold_delay_seconds).wake


def sqs_client() -> Any:
    return LazyClient(lambda: boto3.client("sqs", config=_AWS_CONFIG))


def completion_queue(settings: Settings) -> CompletionQueue:
    from vary_region.aws.completion_queue import CompletionQueue

    if not settings.completion_queue_url:
        raise SettingsError("environment variable COMPLETION_QUEUE_URL is required")
    return CompletionQueue(sqs_client(), settings.completion_queue_url)


def job_completer(settings: Settings) -> JobCompleter:
    from vary_region.completion.image_copier import ImageCopier
    from vary_region.completion.worker import JobCompleter

    s3 = s3_client()
    copier = ImageCopier(
        s3,
        settings.jobs_bucket,
        settings.allowed_image_origins,
        max_bytes=settings.max_image_bytes,
        timeout_seconds=settings.image_timeout_seconds,
        attempts=settings.image_copy_attempts,
    )
    store = task_store(settings)
    files = JobFiles(s3, settings.jobs_bucket)
    return JobCompleter(
        settings,
        store,
        files,
        job_endings(settings, store, files),
        apiframe_client(settings),
        copier,
        completion_queue(settings),
        wake=submit_wake(settings),
    )


def job_endings(
    settings: Settings, store: JobTable, files: JobFiles, clock: Callable[[], datetime] = utc_now
) -> JobEndings:
    """How the completion and reconciler functions end a job unsuccessfully: in the table and the
    results folder they work on, under the stack's results prefix, at the clock's time."""
    from vary_region.endings import JobEndings

    return JobEndings(store, files, settings.results_prefix, clock)


def state_change_publisher(settings: Settings) -> StateChangePublisher:
    from vary_region.publisher.publisher import EventPublisher, StateChangePublisher
    from vary_region.publisher.task_callbacks import TaskCallbacks

    events = LazyClient(lambda: boto3.client("events", config=_AWS_CONFIG))
    callbacks = None
    if settings.caller_state_machine_arns:  # else the publisher may answer nobody (template.yaml's IAM)
        callbacks = TaskCallbacks(LazyClient(lambda: boto3.client("stepfunctions", config=_AWS_CONFIG)))
    return StateChangePublisher(EventPublisher(events, settings.event_bus_name), settings.jobs_bucket, callbacks)


def webhook_receiver(settings: Settings) -> WebhookReceiver:
    from vary_region.webhook.receiver import WebhookReceiver

    return WebhookReceiver(task_store(settings), completion_queue(settings), provider_webhooks(settings))


def reconciler(settings: Settings) -> Reconciler:
    from vary_region.reconciler.reconciler import Reconciler

    store = task_store(settings)
    return Reconciler(
        settings,
        store,
        job_endings(settings, store, JobFiles(s3_client(), settings.jobs_bucket)),
        apiframe_client(settings),
        completion_queue(settings),
        wake=submit_wake(settings),
        balance=free_calls_client(settings).account_credits if settings.balance_cache_seconds else None,
    )
