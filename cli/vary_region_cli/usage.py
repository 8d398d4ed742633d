"""`vary-region usage`: today's and this month's credits against the limits, and the jobs held for credits.

The ledger's items are read as the pipeline writes them (vary_region.store.credit_ledger); the held jobs
come from the open-jobs index (no table scan) and then their items, for the reason and the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vary_region.core.credits import PeriodUsage, periods_at
from vary_region.store.credit_ledger import period_usage
from vary_region.store.schema import ACTIVE_VALUES, OPEN_JOBS_INDEX

from vary_region_cli.config import Target
from vary_region_cli.jobs import format_table, plain, short_time

# Why a job waits for credits (`held_reason`, set by the submit function).
CREDIT_REASONS = ("BUDGET_EXCEEDED", "PROVIDER_BALANCE_LOW")
_BATCH_GET_LIMIT = 100


@dataclass(frozen=True)
class HeldJob:
    job_id: str
    reason: str
    credits: int | None
    held_at: str | None
    held_until: str | None = None  # for the budget: the start of the full period that opens last


@dataclass(frozen=True)
class Usage:
    periods: list[PeriodUsage]
    held: list[HeldJob]

    def to_dict(self) -> dict[str, Any]:
        return {
            "periods": [
                {
                    "period": str(u.period.kind),
                    "name": u.period.name,
                    "reserved": u.reserved,
                    "spent": u.spent,
                    "in_flight": u.in_flight,
                    "limit": u.limit or None,
                    "left": max(0, u.limit - u.reserved) if u.limit else None,
                }
                for u in self.periods
            ],
            "held_for_credits": [
                {
                    "job_id": job.job_id,
                    "reason": job.reason,
                    "credits": job.credits,
                    "held_at": job.held_at,
                    "held_until": job.held_until,
                }
                for job in self.held
            ],
        }


def read_usage(target: Target, now: datetime | None = None) -> Usage:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    usage = []
    for period in periods_at(now or datetime.now(UTC)):
        raw = target.dynamodb.get_item(
            TableName=target.require_table(), Key={"job_id": {"S": period.key}}, ConsistentRead=True
        ).get("Item")
        item = plain({k: deserializer.deserialize(v) for k, v in raw.items()}) if raw else None
        usage.append(period_usage(item, period))
    return Usage(usage, held_for_credits(target))


def held_for_credits(target: Target) -> list[HeldJob]:
    """Open jobs held back (RECEIVED with held_at, from the index), then the reason on their items."""
    table = target.require_table()
    held_ids: list[str] = []
    paginator = target.dynamodb.get_paginator("query")
    for shard in ACTIVE_VALUES:
        for page in paginator.paginate(
            TableName=table,
            IndexName=OPEN_JOBS_INDEX,
            KeyConditionExpression="active = :shard",
            FilterExpression="#status = :received AND attribute_exists(held_at)",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":shard": {"S": shard}, ":received": {"S": "RECEIVED"}},
        ):
            held_ids += [item["job_id"]["S"] for item in page.get("Items", [])]
    jobs: list[HeldJob] = []
    for start in range(0, len(held_ids), _BATCH_GET_LIMIT):
        keys = [{"job_id": {"S": job_id}} for job_id in held_ids[start : start + _BATCH_GET_LIMIT]]
        request: dict[str, Any] = {
            table: {"Keys": keys, "ProjectionExpression": "job_id, held_reason, credits_needed, held_at, held_until"}
        }
        while request:
            answer = target.dynamodb.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table, []):
                reason = item.get("held_reason", {}).get("S")
                if reason in CREDIT_REASONS:
                    credits = item.get("credits_needed", {}).get("N")
                    held_at, until = item.get("held_at", {}).get("S"), item.get("held_until", {}).get("S")
                    jobs.append(HeldJob(item["job_id"]["S"], reason, int(credits) if credits else None, held_at, until))
            request = answer.get("UnprocessedKeys") or {}
    return sorted(jobs, key=lambda job: job.held_at or "")


def render(usage: Usage, limit: int) -> str:
    rows = [
        [
            f"{u.period.kind} {u.period.name}",
            str(u.reserved),
            str(u.spent),
            str(u.in_flight),
            str(u.limit) if u.limit else "none",
            str(max(0, u.limit - u.reserved)) if u.limit else "-",
        ]
        for u in usage.periods
    ]
    lines = [format_table(rows, ["CREDITS", "RESERVED", "SPENT", "IN FLIGHT", "LIMIT", "LEFT"])]
    if not usage.held:
        lines.append("\nno jobs held for credits")
        return "\n".join(lines)
    by_reason = {reason: sum(1 for job in usage.held if job.reason == reason) for reason in CREDIT_REASONS}
    needed = sum(job.credits or 0 for job in usage.held)
    summary = ", ".join(f"{reason} {count}" for reason, count in by_reason.items() if count)
    lines.append(f"\n{len(usage.held)} jobs held for credits ({summary}), needing {needed} credits")
    shown = [
        [
            job.job_id,
            job.reason,
            str(job.credits) if job.credits is not None else "?",
            short_time(job.held_at),
            short_time(job.held_until) if job.reason == "BUDGET_EXCEEDED" else "-",  # the balance: once topped up
        ]
        for job in usage.held[:limit]
    ]
    header = ["JOB ID", "REASON", "CREDITS", "HELD SINCE (UTC)", "UNTIL (UTC)"]
    lines.append(format_table(shown, header))
    if len(usage.held) > limit:
        lines.append(f"... and {len(usage.held) - limit} more (--limit)")
    return "\n".join(lines)
