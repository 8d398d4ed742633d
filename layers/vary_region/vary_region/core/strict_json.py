"""JSON as RFC 8259 defines it, on the way in, and only that on the way out.

Python's reader takes `NaN`, `Infinity` and `-Infinity`, turns `1e999` into infinity, and recurses
once per level of nesting. A job carrying any of those would make every document and event written
about it invalid JSON (EventBridge refuses the entry, JavaScript's `JSON.parse` fails), or crash the
function that reads it. `loads` refuses them, with a message that names what it found; every writer
passes `allow_nan=False` to `json.dumps` (tests/unit/runtime/test_strict_json.py checks each call).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

# Far above any job file's own structure (mask.regions[i].polygon[j] is five levels) and metadata as
# people write it; far below the interpreter's recursion limit. DynamoDB stops documents at 32 too.
MAX_DEPTH = 32

# A string runs to its closing quote, or to the end of an unterminated text: one linear pass, never a
# second scan from a quote inside a string (escaped quotes would make that quadratic).
_STRINGS = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# A number that may be past a double's range (1e309, or 309 digits): only then is each float read by
# the hook that notices one; other texts are read at the C parser's speed.
_MAYBE_HUGE_NUMBER = re.compile(r"[eE]\+?0*[1-9]\d{2}|\d{309}")


class JsonRefused(ValueError):
    """Text that is not strict JSON, or nested deeper than MAX_DEPTH.

    `parsed` is the document when the text was readable and only its numbers were refused (NaN,
    Infinity, out of range), so a caller can still tell whom it concerned (a requested job's id);
    None otherwise."""

    def __init__(self, reason: str, parsed: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parsed = parsed


def loads(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """The document `text` holds, or JsonRefused saying why not."""
    # Measured before parsing, never by catching RecursionError: the parser would first recurse as
    # deep as the input goes, and code running near the recursion limit fails in places nobody tests.
    # Fewer opening brackets than the limit cannot nest past it: no need to tell strings apart then.
    depth = nesting_depth(text) if text.count("[") + text.count("{") > max_depth else 0
    if depth > max_depth:
        raise JsonRefused(f"arrays and objects nest {depth} levels deep; at most {max_depth} are read")
    refused: list[str] = []
    try:
        floats = _finite_float(refused) if _MAYBE_HUGE_NUMBER.search(text) else None
        document = json.loads(text, parse_constant=_noting(refused), parse_float=floats)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # the only other error json.loads raises: int() of more than 4300 digits
        raise JsonRefused("a number in it has more than 4300 digits") from None
    if refused:
        raise JsonRefused(refused[0], parsed=document)
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("a string holds an unpaired \\ud800-\\udfff escape, which is no character") from None
    return document


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    openings = brackets.count("[") + brackets.count("{")
    if openings <= 1:
        return openings
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)))


def read_stored(raw: str) -> Any:
    """JSON this system stored before it refused NaN and infinity (an older item's metadata): such a
    number reads as null, so what is written from it stays valid JSON."""
    return json.loads(raw, parse_constant=lambda _token: None)


def _noting(refused: list[str]) -> Callable[[str], float]:
    def constant(token: str) -> float:
        refused.append(
            f"{token} is not a JSON number (JSON has no NaN or infinity): give a finite number, null or a string"
        )
        return math.nan

    return constant


def _finite_float(refused: list[str]) -> Callable[[str], float]:
    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            refused.append(f"the number {text[:40]} is beyond the largest a double holds (it would read as infinity)")
        return value

    return number
