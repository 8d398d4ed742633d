"""template.yaml's two caller parameters: CallerStateMachineArns gives the publisher alone the three
callback actions on exactly those state machines, and no statement at all when empty; MaskSources
gives the submit function s3:GetObject on exactly its entries, read as the code reads them (a
`bucket` any key, a `bucket/prefix` the keys under prefix/). Both reach the functions' environment."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

import pytest
from vary_region.settings import MaskSource
from vary_region_local import template

MACHINE = "arn:aws:states:eu-west-1:123456789012:stateMachine:"
CALLBACK_ACTIONS = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}


def _statements(folder: str) -> list[Any]:
    props = template.resource_properties(template.function(folder).logical_id)
    policies = [policy for policy in props.get("Policies", []) if isinstance(policy, dict)]  # not managed ones
    return [statement for policy in policies for statement in policy.get("Statement", [])]


def _conditional(folder: str, sid: str) -> tuple[str, dict[str, Any]]:
    """The statement `sid` of the function, which must sit in an !If [condition, statement, NoValue]."""
    for statement in _statements(folder):
        if isinstance(statement, template.Tag) and statement.name == "If":
            condition, then, otherwise = statement.value
            if isinstance(then, dict) and then.get("Sid") == sid:
                assert otherwise == template.Tag("Ref", "AWS::NoValue")
                return condition, then
    raise AssertionError(f"{folder} has no conditional statement {sid}")


def _actions(statement: Any) -> set[str]:
    if not isinstance(statement, dict):
        statement = statement.value[1]
    action = statement.get("Action")
    return {action} if isinstance(action, str) else set(action or [])


def test_caller_state_machines_default_to_none_and_empty_means_no_statement() -> None:
    parameters = template.document()["Parameters"]
    assert parameters["CallerStateMachineArns"]["Default"] == ""
    assert template.document()["Conditions"]["HasCallerStateMachines"] == template.Tag(
        "Not", [template.Tag("Equals", [template.Tag("Ref", "CallerStateMachineArns"), ""])]
    )
    condition, statement = _conditional("publisher", "AnswerCallerTasks")
    assert condition == "HasCallerStateMachines"
    assert set(statement["Action"]) == CALLBACK_ACTIONS
    assert statement["Resource"] == template.Tag("Split", [",", template.Tag("Ref", "CallerStateMachineArns")])


@pytest.mark.parametrize("folder", ["completion", "reconciler", "submit", "webhook"])
def test_no_other_function_may_answer_a_task(folder: str) -> None:
    assert not any(action.startswith("states:") for s in _statements(folder) for action in _actions(s))


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("", True),
        ("arn:aws:states:eu-west-1:123456789012:stateMachine:images", True),
        (
            f"{MACHINE}a,{MACHINE}b",
            True,
        ),
        (
            f"{MACHINE}a, {MACHINE}b",
            False,
        ),
        ("arn:aws:lambda:eu-west-1:123456789012:function:x", False),
        ("*", False),
    ],
    ids=["empty", "one", "two", "a-space", "not-a-state-machine", "wildcard"],
)
def test_caller_state_machine_arns_take_only_state_machine_arns(value: str, allowed: bool) -> None:
    pattern = template.document()["Parameters"]["CallerStateMachineArns"]["AllowedPattern"]
    assert bool(re.match(pattern, value)) is allowed


@pytest.mark.parametrize("folder", ["submit", "publisher"])
def test_the_callers_reach_the_functions_that_need_them(folder: str) -> None:
    variable = template.function(folder).environment["CALLER_STATE_MACHINE_ARNS"]
    assert (variable.parameter, variable.parameter_default) == ("CallerStateMachineArns", "")


def test_mask_sources_reach_the_submit_function_only() -> None:
    variable = template.function("submit").environment["MASK_SOURCES"]
    assert (variable.parameter, variable.parameter_default) == ("MaskSources", "")
    assert "MASK_SOURCES" not in template.function("publisher").environment


def _mask_source_arns(value: str) -> list[str]:
    """The ReadMaskSources statement's Resource as CloudFormation resolves it for MaskSources=value."""
    condition, statement = _conditional("submit", "ReadMaskSources")
    assert condition == "HasMaskSources"
    split = statement["Resource"]
    assert split.name == "Split" and split.value[0] == ","
    sub = split.value[1]
    text, variables = sub.value
    join = variables["Entries"]
    delimiter, inner = join.value
    assert inner == template.Tag("Split", [",", template.Tag("Ref", "MaskSources")])
    entries = delimiter.join(value.split(","))
    return text.replace("${AWS::Partition}", "aws").replace("${Entries}", entries).split(",")


def test_the_submit_function_reads_exactly_the_mask_sources() -> None:
    _, statement = _conditional("submit", "ReadMaskSources")
    assert _actions(statement) == {"s3:GetObject"}
    assert _mask_source_arns("masks,shared/approved/v1") == [
        "arn:aws:s3:::masks/*",
        "arn:aws:s3:::shared/approved/v1/*",
    ]


@pytest.mark.parametrize(
    ("entry", "bucket", "key"),
    [
        ("masks", "masks", "any/key.png"),
        ("masks", "masks-2", "any/key.png"),
        ("shared/approved", "shared", "approved/m.png"),
        ("shared/approved", "shared", "approved-not/m.png"),
        ("shared/approved", "shared", "other/m.png"),
        ("shared/approved", "other", "approved/m.png"),
    ],
    ids=["bucket", "bucket-with-a-longer-name", "prefix", "prefix-lookalike", "other-prefix", "other-bucket"],
)
def test_the_code_allows_a_mask_exactly_where_iam_lets_it_read(entry: str, bucket: str, key: str) -> None:
    (arn,) = _mask_source_arns(entry)
    iam_allows = fnmatch.fnmatchcase(f"arn:aws:s3:::{bucket}/{key}", arn)
    assert MaskSource.parse(entry).holds(bucket, key) is iam_allows


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("", True), ("masks", True), ("masks,shared/approved/v1", True), ("masks, other", False), ("masks/*", False)],
    ids=["empty", "bucket", "two", "a-space", "wildcard"],
)
def test_mask_sources_take_buckets_and_prefixes_only(value: str, allowed: bool) -> None:
    pattern = template.document()["Parameters"]["MaskSources"]["AllowedPattern"]
    assert bool(re.match(pattern, value)) is allowed
