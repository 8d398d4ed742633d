"""The credit ledger's items in the job table: what each UTC day and month has reserved and spent."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from vary_region.core.credits import BudgetPolicy, Period, PeriodUsage, period_usage
from vary_region.store.table_io import JobTableError


def credit_usage(table: Any, periods: tuple[Period, ...], policy: BudgetPolicy) -> list[PeriodUsage]:
    """What each period has reserved and spent so far, against its limit (strongly consistent)."""
    usage = []
    for period in periods:
        try:
            item = table.get_item(Key={"job_id": period.key}, ConsistentRead=True).get("Item")
        except ClientError as exc:
            raise JobTableError(str(exc)) from exc
        usage.append(period_usage(item, period, policy))
    return usage
