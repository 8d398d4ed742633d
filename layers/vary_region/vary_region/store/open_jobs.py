"""The open jobs nobody has heard from for a while: every shard of the open-jobs index, each read
from its oldest, merged into one line, oldest first (the reconciler's work list)."""

from __future__ import annotations

import heapq
import math
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from vary_region.core.job import Job, timestamp
from vary_region.store.items import job_from_item
from vary_region.store.schema import ACTIVE_VALUES, OPEN_JOBS_INDEX
from vary_region.store.table_io import JobTableError


def quiet_jobs(table: Any, updated_before: datetime, limit: int) -> list[Job]:
    """Unfinished jobs whose last change is older than `updated_before`, oldest first (JobTable.quiet_jobs)."""
    from boto3.dynamodb.conditions import Key

    # Each shard's oldest, a fair share and some slack each: not limit x 9 items read every run.
    share = max(20, 2 * math.ceil(limit / len(ACTIVE_VALUES)))
    per_shard = [
        _query_all(
            table,
            IndexName=OPEN_JOBS_INDEX,
            KeyConditionExpression=Key("active").eq(value) & Key("updated_at").lt(timestamp(updated_before)),
            limit=min(limit, share),
        )
        for value in ACTIVE_VALUES
    ]
    oldest = heapq.merge(*per_shard, key=lambda item: str(item.get("updated_at", "")))
    return [job_from_item(item) for _, item in zip(range(limit), oldest, strict=False)]


def _query_all(table: Any, *, limit: int, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs["Limit"] = limit
    while len(items) < limit:
        try:
            page = table.query(**kwargs)
        except ClientError as exc:
            raise JobTableError(str(exc)) from exc
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return items[:limit]
