"""The job table's keys and indexes: what the functions and the CLI both need to find items."""

import zlib
from decimal import Decimal
from typing import Any

# Open jobs carry the sparse `active` attribute the reconciler's index is built on. Its value is one
# of a few shards, so no single index partition takes every open job's writes (each progress update
# rewrites `updated_at`, the index's sort key). Items written before sharding carry plain "ACTIVE".
ACTIVE_SHARDS = 8
OPEN_JOBS_INDEX = "open-jobs-by-updated"
# Every job by the UTC day it was received (`created_day`, sorted by `created_at`): `vary-region list`.
JOBS_BY_DAY_INDEX = "jobs-by-day"
ACTIVE_VALUES = (*(f"ACTIVE#{shard}" for shard in range(ACTIVE_SHARDS)), "ACTIVE")
# The provider-slot counter shares the job table; job ids never contain "/", so this key is no job's.
SLOTS_KEY = "/provider-slots"


def active_shard(job_id: str) -> str:
    return f"ACTIVE#{zlib.crc32(job_id.encode('utf-8')) % ACTIVE_SHARDS}"


def plain(value: Any) -> Any:
    """An item's value as JSON-ready Python: DynamoDB gives numbers back as Decimal, sets as sets
    and binary as bytes. The functions read `result` through it, the CLI whole items."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    return value
