"""The provider-slot counter: one item of the job table counts the provider tasks in flight. A claim
takes a slot in its own transaction, conditional on the limit; the write that ends the claim gives
it back in its transaction, so no slot is taken or kept without the claim that holds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vary_region.store.schema import SLOTS_KEY


class ProviderBusy(Exception):
    """Every provider slot is taken (MAX_ACTIVE_TASKS tasks in flight): hold the job back."""


class ProviderSlots:
    def __init__(self, table: Any, limit: int | Callable[[], int]) -> None:
        self._table = table
        # A number, or (v2 with the setting left empty) the account's own limit, read when first needed.
        self._limit = limit

    @property
    def limit(self) -> int:
        limit = self._limit
        return limit() if callable(limit) else limit

    def in_use(self) -> int:
        item = self._table.get_item(Key={"job_id": SLOTS_KEY}, ConsistentRead=True).get("Item") or {}
        return int(item.get("in_use", 0))

    def take(self) -> dict[str, Any]:
        """The update that takes a slot; its condition fails when all are taken."""
        return {
            "Key": {"job_id": SLOTS_KEY},
            "UpdateExpression": "SET in_use = if_not_exists(in_use, :zero) + :one",
            "ConditionExpression": "attribute_not_exists(in_use) OR in_use < :max",
            "ExpressionAttributeValues": {":zero": 0, ":one": 1, ":max": self.limit},
        }

    @staticmethod
    def give_back() -> dict[str, Any]:
        """The update that gives a slot back; its condition fails on a counter already at zero."""
        return {
            "Key": {"job_id": SLOTS_KEY},
            "UpdateExpression": "SET in_use = in_use - :one",
            "ConditionExpression": "in_use > :zero",
            "ExpressionAttributeValues": {":one": 1, ":zero": 0},
        }
