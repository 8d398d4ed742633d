"""The provider account's remaining credits, as far as this container knows them.

Read through GET /account at most once per `cache_seconds`, and lowered by what this container
submits meanwhile, so one burst does not send more than the balance covers on a stale figure. An
unreadable balance is unknown (None), never zero: the budget guard's limits still hold, and the
provider itself remains the last word.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from vary_region.core.errors import ProviderRejected, ProviderUnavailable, RequestNotSent
from vary_region.observability import logger


class ProviderBalance:
    def __init__(
        self,
        read: Callable[[], int | None],
        cache_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._known: int | None = None
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def credits(self) -> int | None:
        if self._cache_seconds <= 0:
            return None  # the balance check is switched off
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._cache_seconds:
                self._read_at = now  # a failed read is not retried on every job either
                self._known = self._read_now()
            return self._known

    def note_spent(self, credits: int) -> None:
        with self._lock:
            if self._known is not None:
                self._known = max(0, self._known - credits)

    def _read_now(self) -> int | None:
        try:
            return self._read()
        except (ProviderRejected, ProviderUnavailable, RequestNotSent) as exc:
            logger.warning("the provider's balance could not be read", extra={"reason": type(exc).__name__})
            return None
