"""`vary-region doctor`: how it reads a deployed stack (the end-to-end run is tests/e2e/test_doctor.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from botocore.exceptions import ClientError
from vary_region.settings import GENERATIONS
from vary_region_cli import doctor, doctor_checks, doctor_probe
from vary_region_cli.config import Target
from vary_region_cli.doctor import Outcome
from vary_region_local import template

OUTPUTS = {
    "JobsBucketName": "bucket-1",
    "JobsTableName": "table-1",
    "WebhookUrl": "https://api-1.example/webhook",
    "EventBusName": "default",
    "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:alarms",
    "ApiKeySecretArn": "arn:secret:created",
}


class FakeCloudFormation:
    def __init__(self, status: str, outputs: dict[str, str], parameters: dict[str, str]) -> None:
        self.stack = {
            "StackStatus": status,
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()],
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        }

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [self.stack]}


class FakeLambda:
    def __init__(self, variables: dict[str, str] | None) -> None:
        self.variables = variables

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:
        if self.variables is None:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetFunctionConfiguration")
        assert FunctionName == "stack-1-submit"
        return {"Environment": {"Variables": self.variables}}


class FakeTarget:
    local = False
    stack_name = "stack-1"

    def __init__(self, **clients: Any) -> None:
        self.clients = clients

    def client(self, service: str) -> Any:
        return self.clients[service]


def facts_of(
    status: str = "UPDATE_COMPLETE",
    outputs: dict[str, str] = OUTPUTS,
    parameters: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
) -> tuple[doctor.Check, doctor.StackFacts | None]:
    target = FakeTarget(
        cloudformation=FakeCloudFormation(status, outputs, parameters or {}),
        **{"lambda": FakeLambda(variables)},
    )
    return doctor.read_facts(cast(Target, target))


def test_the_provider_settings_are_read_as_the_functions_get_them() -> None:
    check, facts = facts_of(
        parameters={"ApiframeApiVersion": "v1", "ApiframeBaseUrl": ""},
        variables={
            "APIFRAME_API_VERSION": "v2",
            "APIFRAME_BASE_URL": "http://127.0.0.1:9000",
            "APIFRAME_API_KEY_SECRET_ID": "arn:secret:in-the-function",
            "APIFRAME_API_KEY_PARAMETER": "",
        },
    )
    assert check.outcome is Outcome.PASS and facts is not None
    assert (facts.api_version, facts.apiframe_base_url) == ("v2", "http://127.0.0.1:9000")
    assert facts.api_key_secret_id == "arn:secret:in-the-function"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_without_the_functions_configuration_the_stacks_parameters_and_defaults_are_used(version: str) -> None:
    check, facts = facts_of(parameters={"ApiframeApiVersion": version, "ApiframeBaseUrl": ""}, variables=None)
    assert check.outcome is Outcome.PASS and facts is not None
    assert (facts.api_version, facts.apiframe_base_url) == (version, GENERATIONS[version][0])
    assert facts.api_key_secret_id == "arn:secret:created"  # the stack's own secret, from its output


def test_an_existing_parameter_is_the_key_source_when_the_stack_made_no_secret() -> None:
    outputs = {k: v for k, v in OUTPUTS.items() if k != "ApiKeySecretArn"}
    _, facts = facts_of(outputs=outputs, parameters={"ApiKeyParameterName": "/vary-region/key"})
    assert facts is not None and (facts.api_key_secret_id, facts.api_key_parameter) == ("", "/vary-region/key")


def test_a_stack_that_rolled_back_or_lacks_outputs_fails_the_first_check() -> None:
    rolled_back, _ = facts_of(status="UPDATE_ROLLBACK_COMPLETE")
    assert rolled_back.outcome is Outcome.FAIL and "UPDATE_ROLLBACK_COMPLETE" in rolled_back.reason
    older, facts = facts_of(outputs={k: v for k, v in OUTPUTS.items() if k != "AlarmTopicArn"})
    assert older.outcome is Outcome.FAIL and "AlarmTopicArn" in older.reason and facts is None


def test_the_doctor_knows_the_templates_placeholder_and_each_generations_api() -> None:
    secret = template.resource_properties("ApiKeySecret")["SecretString"]
    assert secret == doctor_checks.PLACEHOLDER_API_KEY
    assert {version: url for version, (url, _) in GENERATIONS.items()} == doctor.DEFAULT_BASE_URLS


def test_the_key_is_read_as_the_functions_read_it() -> None:
    assert doctor_checks.clean_key("  afk_1  \n") == "afk_1"
    assert doctor_checks.clean_key('{"api_key": " k-2 "}') == "k-2"


def prefixed(prefix: str, case: str = "prefix") -> dict[str, Any]:
    return {"Key": {"FilterRules": [{"Name": case, "Value": prefix}]}}


@pytest.mark.parametrize(
    ("rule", "covers"),
    [
        ({"Events": ["s3:ObjectCreated:*"], "Filter": prefixed("inbox/")}, True),
        ({"Events": ["s3:ObjectCreated:Put"]}, True),
        ({"Events": ["s3:ObjectCreated:*"], "Filter": prefixed("results/", "Prefix")}, False),
        ({"Events": ["s3:ObjectRemoved:*"]}, False),
    ],
)
def test_a_notification_covers_the_inbox_only_for_new_objects_under_it(rule: dict[str, Any], covers: bool) -> None:
    assert doctor_probe._notifies_inbox(rule) is covers


def test_a_failed_check_shows_its_fix_and_a_passed_one_does_not() -> None:
    failed = doctor.render(doctor.Check("API key", Outcome.FAIL, "placeholder", "put the key"))
    assert failed.splitlines()[0].startswith("FAIL  API key") and failed.splitlines()[1].strip() == "fix: put the key"
    assert "fix:" not in doctor.render(doctor.Check("API key", Outcome.PASS, "set", "put the key"))


def test_the_probe_is_a_job_whose_mask_is_no_image() -> None:
    job_id = doctor_probe.probe_job_id()
    document = doctor_probe.probe_document(job_id)
    assert job_id.startswith(doctor_probe.PROBE_PREFIX) and document["mask"].startswith("data:image/png;base64,")
