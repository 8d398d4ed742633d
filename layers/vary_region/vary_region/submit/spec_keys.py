"""The keys a job file may hold, and the refusal of any other.

A misspelt optional key ("promt") would otherwise be ignored, and the job paid for without it. The
same sets serve job.json, the inline job file and a requested job's detail (less its `job_id`).
A new key is one more name here, and its reading in job_spec.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from vary_region.core.errors import JobRejected

UNKNOWN_KEY = "SPEC_UNKNOWN_KEY"

JOB_KEYS = frozenset({"parent_task_id", "prompt", "metadata", "mask", "mask_fit", "index", "imagine", "task_token"})
IMAGINE_KEYS = frozenset({"prompt", "index", "aspect_ratio"})
MASK_KEYS = frozenset({"regions", "units"})
_SHOWN = 5  # unknown keys named in one message


def refuse_unknown_keys(value: Mapping[str, Any], known: Collection[str], where: str) -> None:
    """SPEC_UNKNOWN_KEY naming every key of `value` outside `known` (a near miss with its likely
    intended name); `where` names the object, e.g. "the job file" or "`imagine`"."""
    unknown = sorted(key for key in value if key not in known)
    if not unknown:
        return
    named = ", ".join(f"{key[:60]!r}{did_you_mean(key, known)}" for key in unknown[:_SHOWN])
    more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
    plural = "s" if len(unknown) > 1 else ""
    raise JobRejected(
        UNKNOWN_KEY,
        f"unknown key{plural} {named}{more} in {where}; it takes only {', '.join(sorted(known))}",
    )


def did_you_mean(name: str, known: Collection[str]) -> str:
    """' (did you mean 'prompt'?)' for a near miss of a known name, else ''."""
    import difflib  # only on the way to a refusal: not on every cold start

    by_lower = {candidate.lower(): candidate for candidate in known}
    close = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
