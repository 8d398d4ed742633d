"""The provider account's own limit on tasks in flight, read once per container when first needed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from vary_region.observability import logger


class AccountLimit:
    """Calls to it answer the account's limit; until it could be read, `fallback`, asked again later."""

    def __init__(self, read: Callable[[], int | None], fallback: int) -> None:
        self._read = read
        self._fallback = fallback
        self._known: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        if self._known is None:
            with self._lock:
                if self._known is None:
                    try:
                        limit = self._read()
                    except Exception as exc:  # the provider is down: claims go on under the fallback
                        logger.warning(
                            "the account's task limit could not be read", extra={"error": type(exc).__name__}
                        )
                        return self._fallback
                    if limit is None or limit < 1:
                        return self._fallback
                    self._known = limit
        return self._known
