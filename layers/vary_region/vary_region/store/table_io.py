"""The job table's writes on the wire: a conditional update alone or in a transaction (retried while
hot items conflict), and a failed condition told apart from a lost answer of the write's own."""

from __future__ import annotations

import random
import re
import time
import uuid
from typing import Any

from botocore.exceptions import ClientError

_TRANSACTION_ATTEMPTS = 5


class JobTableError(Exception):
    """The table could not be read or written (not a lost race: those return False)."""


def lost_race(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def update_request(job_id: str, update: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
    # Each job write leaves its own id on the item: an answer lost and the request resent, its
    # condition fails on the write it made itself, and the id tells so (_already_written).
    write = "write_id = :write_id"
    update = update.replace("SET ", f"SET {write}, ", 1) if "SET " in update else f"SET {write} {update}"
    values = values | {":write_id": uuid.uuid4().hex}
    tokens = set(re.findall(r"[:#]\w+", update + " " + condition))
    request: dict[str, Any] = {
        "Key": {"job_id": job_id},
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": {k: v for k, v in values.items() if k in tokens},
    }
    names = {name: name[1:] for name in ("#status", "#error", "#result", "#stage") if name in tokens}
    if names:
        request["ExpressionAttributeNames"] = names
    return request


def update_item(table: Any, request: dict[str, Any]) -> bool:
    """One conditional update (an update_request); False when its condition failed (a lost race).

    A condition that fails on an item that carries this update's own write id is this update's
    earlier attempt, applied although its answer was lost (botocore sent it again): True, not a
    lost race.
    """
    try:
        table.update_item(**request, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as exc:
        if lost_race(exc):
            return _already_written(request, exc.response.get("Item"))
        raise JobTableError(str(exc)) from exc
    return True


def transact(table: Any, *requests: dict[str, Any]) -> list[bool]:
    """Conditional updates, all or nothing; returns, per update, whether its condition failed.

    None failed when an update's item carries that update's own write id: an earlier attempt of
    this very transaction was applied, its answer lost (see update_item).
    """
    # The resource's client serialises plain Python values itself, as Table.update_item does.
    items = [
        {"Update": dict(request, TableName=table.name) | _old_item_on_failed_condition(request)} for request in requests
    ]
    count = len(items)
    for attempt in range(_TRANSACTION_ATTEMPTS):
        try:
            table.meta.client.transact_write_items(TransactItems=items)
            return [False] * count
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise JobTableError(str(exc)) from exc
            reasons = exc.response.get("CancellationReasons") or _reasons_from_message(str(exc))
            codes = ([r.get("Code") for r in reasons] + [None] * count)[:count]
            if "ConditionalCheckFailed" in codes:
                olds = ([r.get("Item") for r in reasons] + [None] * count)[:count]
                if any(
                    code == "ConditionalCheckFailed" and _already_written(request, old)
                    for request, code, old in zip(requests, codes, olds, strict=True)
                ):
                    return [False] * count
                return [code == "ConditionalCheckFailed" for code in codes]
            # The slot counter and the ledger's items are hot: concurrent transactions on them
            # conflict. Retry those.
            if "TransactionConflict" not in codes or attempt == _TRANSACTION_ATTEMPTS - 1:
                raise JobTableError(str(exc)) from exc
            time.sleep(random.uniform(0.01, 0.05 * 2**attempt))
    raise AssertionError("unreachable")


def _already_written(request: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """The item (as DynamoDB returned it on a failed condition) carries this request's own write id:
    the update was applied by an earlier attempt of this very request (its answer lost, botocore sent
    it again), so the failed condition is no lost race."""
    write_id = request.get("ExpressionAttributeValues", {}).get(":write_id")
    if write_id is None or not old:
        return False
    return bool(old.get("write_id") == {"S": write_id})


def _old_item_on_failed_condition(request: dict[str, Any]) -> dict[str, str]:
    return {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if "ConditionExpression" in request else {}


def _reasons_from_message(message: str) -> list[dict[str, Any]]:
    """Some endpoints put the reasons only in the message: "... reasons [ConditionalCheckFailed, None]"."""
    listed = message.rsplit("[", 1)[-1].rstrip("]").split(",")
    return [{"Code": reason.strip()} for reason in listed]
