"""The credit ledger's items in the job table: what each UTC day and month has reserved and spent.

A job reserves the credits of its whole chain in the transaction that claims its first stage
(JobTable.claim_submission), with a condition on each limited period's item; DynamoDB serialises
transactions on an item, so no number of concurrent jobs can overshoot a limit, and a chain never
stops half-paid for lack of budget. The job ends in a transaction that settles its reservation:
what its stages spent stays counted, the rest goes back to the periods it was reserved in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from vary_region.core.credits import BudgetPolicy, CreditReservation, Period, PeriodUsage, Settlement
from vary_region.store.table_io import JobTableError

# A month's item outlives its month by a year, then DynamoDB's TTL removes it.
_LEDGER_TTL = timedelta(days=400)


def reservation_requests(reservation: CreditReservation, policy: BudgetPolicy) -> list[tuple[Period, dict[str, Any]]]:
    """One conditional update per period: the room left must hold the whole chain."""
    requests = []
    for period in reservation.periods:
        limit = policy.limit_of(period.kind)
        # The limit in force at the last reservation, for `vary-region usage` (0: none).
        request = _ledger_update(
            period, "reserved :credits", {":credits": reservation.total, ":limit": limit}, "credit_limit = :limit"
        )
        if limit:
            request["ConditionExpression"] = "attribute_not_exists(reserved) OR reserved <= :room"
            request["ExpressionAttributeValues"][":room"] = limit - reservation.total
        requests.append((period, request))
    return requests


def settlement_requests(settlement: Settlement) -> list[dict[str, Any]]:
    """One update per period: what the job did not spend goes back, what it spent is counted as spent."""
    return [
        _ledger_update(
            period, "reserved :back, spent :spent", {":back": -settlement.returned, ":spent": settlement.spent_total}
        )
        for period in settlement.reservation.periods
    ]


def period_usage(item: dict[str, Any] | None, period: Period, policy: BudgetPolicy | None = None) -> PeriodUsage:
    """policy: the limits to measure against; without it, the limit in force at the period's last
    reservation (what `vary-region usage`, which does not know the stack's settings, shows)."""
    item = item or {}
    limit = policy.limit_of(period.kind) if policy is not None else int(item.get("credit_limit", 0))
    return PeriodUsage(period, int(item.get("reserved", 0)), int(item.get("spent", 0)), limit)


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


def _ledger_update(period: Period, add: str, values: dict[str, Any], sets: str = "") -> dict[str, Any]:
    """ADD `add` to the period's item (created on first use), and SET its description and expiry."""
    ttl = int((period.next_opens + _LEDGER_TTL).timestamp())
    assignments = ", ".join(
        part for part in (sets, "period_kind = :kind, period_name = :name, expires_at = :ttl") if part
    )
    return {
        "Key": {"job_id": period.key},
        "UpdateExpression": f"ADD {add} SET {assignments}",
        "ExpressionAttributeValues": values | {":kind": period.kind.value, ":name": period.name, ":ttl": ttl},
    }
