"""The local stack runs each function as template.yaml deploys it: its Timeout, MemorySize, SQS
BatchSize and every environment variable the template gives it. The local stack once copied these
values, and a copy drifts when the template changes."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml
from vary_region_local import template
from vary_region_local.stack import LOCAL_ONLY_ENVIRONMENT

FUNCTIONS = ("completion", "publisher", "reconciler", "submit", "webhook")


def test_the_reader_sees_every_function_with_globals_under_its_own_properties() -> None:
    whole = template.document()
    defaults = whole["Globals"]["Function"]
    assert set(template.functions()) == set(FUNCTIONS)
    for deployed in template.functions().values():
        props = whole["Resources"][deployed.logical_id]["Properties"]
        assert deployed.timeout_seconds == props.get("Timeout", defaults["Timeout"])
        assert deployed.memory_mb == props.get("MemorySize", defaults["MemorySize"])
        assert set(deployed.environment) >= set(defaults["Environment"]["Variables"])


def test_cloudformation_tags_are_kept_not_refused() -> None:
    loaded = yaml.load("a: !Ref Thing\nb: !Sub [x, {y: 1}]\nc: !If {k: v}\n", Loader=template._CfnLoader)
    assert loaded == {
        "a": template.Tag("Ref", "Thing"),
        "b": template.Tag("Sub", ["x", {"y": 1}]),
        "c": template.Tag("If", {"k": "v"}),
    }


@pytest.mark.parametrize("folder", FUNCTIONS)
def test_each_local_function_runs_with_the_templates_timeout_and_memory(stack: Any, folder: str) -> None:
    local, deployed = stack.functions[folder], template.function(folder)
    assert local.name == f"vary-region-{folder}"
    assert (local.timeout_seconds, local.memory_mb) == (deployed.timeout_seconds, deployed.memory_mb)


def test_each_sqs_event_source_takes_the_templates_batch_size(stack: Any) -> None:
    for folder in ("submit", "completion"):
        assert stack.pollers[folder]._batch_size == template.sqs_batch_size(folder)


@pytest.mark.parametrize("folder", FUNCTIONS)
def test_each_local_function_has_every_variable_the_template_gives_it(stack: Any, folder: str) -> None:
    missing = [name for name in template.function(folder).environment if name not in os.environ]
    assert missing == []
    for name, variable in template.function(folder).environment.items():
        if variable.literal is not None:  # the template's own value, not a stack's choice
            assert os.environ[name] == variable.literal


def test_the_local_only_variables_are_not_the_templates() -> None:
    # A template variable set here would be a copy of the template's value, not a local choice.
    assert not set(LOCAL_ONLY_ENVIRONMENT) & set(template.variables())


def test_a_variable_the_template_does_not_have_is_refused() -> None:
    resolved = _resolved() | {"JOBS_BUCKET_NAME": "renamed in the template, not here"}
    with pytest.raises(ValueError, match="JOBS_BUCKET_NAME"):
        template.environment(resolved, {})


def test_a_template_variable_resolved_at_deploy_time_needs_a_local_value() -> None:
    resolved = _resolved()
    del resolved["WEBHOOK_BASE_URL"]
    with pytest.raises(ValueError, match="WEBHOOK_BASE_URL"):
        template.environment(resolved, {})


def test_a_parameters_default_fills_in_only_what_the_environment_does_not_set() -> None:
    env = template.environment(_resolved(), {"JOB_TTL_DAYS": "7"})
    assert "JOB_TTL_DAYS" not in env  # the process environment's 7 stays
    assert env["RECONCILE_BATCH_LIMIT"] == template.variables()["RECONCILE_BATCH_LIMIT"].parameter_default
    assert env["POWERTOOLS_SERVICE_NAME"] == template.variables()["POWERTOOLS_SERVICE_NAME"].literal


def _resolved() -> dict[str, str]:
    return {name: "x" for name, variable in template.variables().items() if variable.default is None}
