"""The time an invocation may still use, as a time.monotonic() deadline for the domain code."""

from __future__ import annotations

import time
from typing import Any


def invocation_deadline(context: Any, margin_seconds: float) -> float | None:
    """None when there is no Lambda context (a direct call in a script or test)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return time.monotonic() + remaining() / 1000 - margin_seconds
