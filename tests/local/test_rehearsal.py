"""The deploy rehearsal's own pieces (`make rehearse` runs the rest): its emulator workarounds rewrite
only what they say, the simulator's webhooks find the emulator, and the IAM mutants match the template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vary_region_local.rehearsal import mutants, workarounds
from vary_region_local.rehearsal.denials import found_in
from vary_region_local.rehearsal.emulator import Certificate
from vary_region_local.rehearsal.provider import RehearsalProvider

ROOT = Path(__file__).resolve().parents[2]


def template(**resources: Any) -> dict[str, Any]:
    return {
        "Parameters": {"EventBusName": {"Default": "default"}, "Concurrency": {"Type": "Number", "Default": 2}},
        "Conditions": {
            "BusIsArn": {"Fn::Equals": [{"Fn::Select": [0, {"Fn::Split": [":", {"Ref": "EventBusName"}]}]}, "arn"]},
            "Other": {"Fn::Equals": [{"Ref": "EventBusName"}, "x"]},
        },
        "Resources": resources,
    }


def test_split_in_a_condition_is_evaluated_over_the_deployed_value() -> None:
    built = template()
    assert workarounds.patch_template(built, {})["Conditions"]["BusIsArn"] == {"Fn::Equals": ["default", "arn"]}
    arn = "arn:aws:events:us-east-1:111122223333:event-bus/shared"
    assert workarounds.patch_template(built, {"EventBusName": arn})["Conditions"]["BusIsArn"] == {
        "Fn::Equals": ["arn", "arn"]
    }
    assert workarounds.patch_template(built, {})["Conditions"]["Other"] == built["Conditions"]["Other"]
    assert "Fn::Split" in str(built["Conditions"])  # the built template itself is left as it was


def test_a_scaling_config_parameter_becomes_its_number() -> None:
    events = {"Inbox": {"Type": "SQS", "Properties": {"ScalingConfig": {"MaximumConcurrency": {"Ref": "Concurrency"}}}}}
    built = template(Fn={"Type": "AWS::Serverless::Function", "Properties": {"Events": events}})
    patched = workarounds.patch_template(built, {"Concurrency": "7"})
    assert patched["Resources"]["Fn"]["Properties"]["Events"]["Inbox"]["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": 7
    }


def test_a_secret_is_referred_to_by_its_arn_and_sqs_actions_bring_their_batch_twins() -> None:
    policy = {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "PolicyDocument": {
                "Statement": [
                    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "Key"}},
                    {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "arn:q"},
                    {"Effect": "Deny", "Action": "sqs:DeleteMessage", "Resource": "arn:q"},
                    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": {"Ref": "Other"}},
                ]
            }
        },
    }
    built = template(Key={"Type": "AWS::SecretsManager::Secret"}, Other={"Type": "AWS::SQS::Queue"}, Policy=policy)
    statements = workarounds.patch_template(built, {})["Resources"]["Policy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    assert statements[0]["Resource"] == {"Fn::GetAtt": ["Key", "Id"]}
    assert statements[1]["Action"] == ["sqs:SendMessage", "sqs:SendMessageBatch"]
    assert statements[2]["Action"] == "sqs:DeleteMessage"  # a Deny is not widened
    assert statements[3] == {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": {"Ref": "Other"}}


class FakeApiGateway:
    def __init__(self) -> None:
        self.integrations: list[dict[str, Any]] = []
        self.routes: list[dict[str, Any]] = []

    def get_routes(self, ApiId: str) -> dict[str, Any]:
        return {"Items": [{"RouteKey": r["RouteKey"]} for r in self.routes]}

    def create_integration(self, **request: Any) -> dict[str, Any]:
        self.integrations.append(request)
        return {"IntegrationId": f"i{len(self.integrations)}"}

    def create_route(self, **request: Any) -> dict[str, Any]:
        self.routes.append(request)
        return {}


def test_the_routes_of_an_openapi_body_are_created_once_with_their_integrations() -> None:
    uri = {
        "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
        "${Hook.Arn}/invocations"
    }
    operation = {"x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": uri, "payloadFormatVersion": "2.0"}}
    body = {"paths": {"/webhook/{job_id}": {"post": operation}}}
    processed = {"Resources": {"Api": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"Body": body}}}}
    gateway = FakeApiGateway()
    arns = {"Hook": "arn:aws:lambda:us-east-1:000000000000:function:hook"}
    for _ in range(2):
        workarounds.create_http_api_routes(processed, {"Api": "abcd1234"}.__getitem__, arns.__getitem__, gateway)
    assert gateway.routes == [{"ApiId": "abcd1234", "RouteKey": "POST /webhook/{job_id}", "Target": "integrations/i1"}]
    assert gateway.integrations == [
        {
            "ApiId": "abcd1234",
            "IntegrationType": "AWS_PROXY",
            "IntegrationMethod": "POST",
            "IntegrationUri": arns["Hook"],
            "PayloadFormatVersion": "2.0",
        }
    ]


def test_a_webhook_to_the_apis_aws_host_goes_to_the_emulator() -> None:
    provider = RehearsalProvider(Certificate(Path("cert.pem"), Path("key.pem")), "https://127.0.0.1:4999")
    assert (
        provider.gateway("https://0f2d6a54.execute-api.us-east-1.amazonaws.com/webhook/j-abc.inpaint")
        == "https://127.0.0.1:4999/_aws/execute-api/0f2d6a54/$default/webhook/j-abc.inpaint"
    )
    assert provider.gateway("https://example.com/webhook/x") == "https://example.com/webhook/x"


def test_a_denial_names_the_function_and_the_action() -> None:
    line = (
        "rehearsal: denied: User: arn:aws:sts::000000000000:assumed-role/vary-region-CompletionFunctionRole-1A/"
        'vary-region-completion is not authorized to perform: s3:PutObject on resource: "arn:aws:s3:::b/results/x"'
    )
    assert found_in(line) == {("vary-region-completion", "s3:PutObject")}
    assert found_in("download failed (AccessDenied)") == set()


def test_every_iam_mutant_names_its_statement_exactly_once_in_the_template() -> None:
    loaded = mutants.load()
    assert loaded
    for mutant in loaded:
        assert (ROOT / mutant.file).read_text().count(mutant.find) == 1, mutant.name
        assert " denied " in mutant.denied or mutant.denied.startswith("denied "), mutant.name
