"""Strict JSON in and out: NaN, Infinity, numbers past a double, unpaired surrogates and nesting past
the limit are refused with a reason, brackets inside strings are not nesting, and every place that
writes JSON (documents, events, queue messages, the CLI) refuses to write NaN."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
from vary_region.aws.job_files import JobFiles
from vary_region.core.strict_json import MAX_DEPTH, JsonRefused, loads, nesting_depth, read_stored

ROOT = Path(__file__).resolve().parents[3]
# Where JSON leaves the system: the functions' shared code, the handlers and the CLI.
WRITERS = [ROOT / "layers" / "vary_region" / "vary_region", ROOT / "functions", ROOT / "cli"]


def refused(text: str) -> JsonRefused:
    with pytest.raises(JsonRefused) as info:
        loads(text)
    return info.value


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_given_a_non_finite_constant_then_it_is_refused_by_name_and_the_document_still_read(token):
    error = refused(f'{{"job_id": "j-1", "metadata": {{"x": [1, {token}]}}}}')

    assert error.reason.startswith(f"{token} is not a JSON number")
    assert error.parsed["job_id"] == "j-1", "who the refusal concerns can still be told"


@pytest.mark.parametrize(
    "number", ["-1.5e400", "1E+0400", "1" + "0" * 309 + ".5"], ids=["e400", "E+0400", "310-digits"]
)
def test_given_a_number_beyond_a_double_then_it_is_refused_rather_than_read_as_infinity(number):
    error = refused(f'{{"x": {number}}}')

    assert number[:40] in error.reason
    assert math.isinf(error.parsed["x"])


def test_given_large_numbers_within_a_double_then_they_are_read():
    assert loads("[1e308, -1.7976931348623157e308, 1e-400, 123456789012345678901234567890]") == [
        1e308,
        -1.7976931348623157e308,
        0.0,
        123456789012345678901234567890,
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"a": 1', "Expecting"),
        ("[" * 40 + "]" * 40, "nest 40 levels"),
        ("[" * 100_000, "nest 100000 levels"),
        ('["\\udc00"]', "unpaired"),
        ('["\\ud83d"]', "unpaired"),
        ("1" * 4301, "4300 digits"),
    ],
)
def test_given_text_that_is_no_strict_json_then_the_reason_is_given_and_nothing_parsed(text, words):
    error = refused(text)

    assert words in error.reason
    assert error.parsed is None


def test_given_valid_json_then_it_is_read_as_python_reads_it():
    text = '{"a": [1, 2.5, -3e10, "x", null, true], "b": {"c": "\\ud83d\\ude00 [{"}, "d": 1e308}'
    assert loads(text) == json.loads(text)


def test_given_the_depth_limit_then_that_depth_is_read_and_one_more_is_not():
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert "nest 33 levels" in refused("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).reason


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("42", 0),
        ("[]", 1),
        ('{"a": [{"b": []}]}', 4),
        ('["[[[[", "{{{{"]', 1),
        ('["a \\" [[[[ \\\\", "]]]]"]', 1),
        ('{"a": "unterminated [[[[', 1),
    ],
)
def test_brackets_inside_strings_are_no_nesting(text, depth):
    assert nesting_depth(text) == depth


def test_given_stored_json_from_before_nan_was_refused_then_it_reads_as_null():
    assert read_stored('{"x": NaN, "y": [Infinity, -Infinity], "z": 1}') == {"x": None, "y": [None, None], "z": 1}


def test_a_document_with_nan_is_never_put_in_the_bucket():
    class NoPuts:
        def put_object(self, **kwargs: object) -> None:
            raise AssertionError(f"{kwargs['Key']} written with NaN in it")

    files = JobFiles(NoPuts(), "jobs-bucket")

    with pytest.raises(ValueError, match="not JSON compliant"):
        files.write_json("results/j-1/result.json", {"job_id": "j-1", "metadata": {"score": math.nan}})


def _json_writes(path: Path) -> list[tuple[int, bool]]:
    """(line, passes allow_nan=False) for every json.dumps / json.dump call in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("dumps", "dump")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "json"
        ):
            strict = any(
                k.arg == "allow_nan" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in node.keywords
            )
            found.append((node.lineno, strict))
    return found


def test_every_json_the_system_writes_refuses_nan_and_infinity():
    """result.json, error.json, state-change events, requested job files, queue messages, HTTP answers,
    the CLI's output: json.dumps writes NaN as `NaN` unless told not to, and no reader takes that."""
    writes = {
        f"{path.relative_to(ROOT)}:{line}": strict
        for root in WRITERS
        for path in sorted(root.rglob("*.py"))
        for line, strict in _json_writes(path)
    }

    assert len(writes) >= 15, "the scan finds the writers"
    assert [where for where, strict in writes.items() if not strict] == []
