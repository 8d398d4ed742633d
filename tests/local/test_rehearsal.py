"""The deploy rehearsal's own pieces (`make rehearse` runs the rest): its emulator workarounds rewrite
only what they say, the simulator's webhooks find the emulator, and the IAM mutants name statements
the template gives their functions, a removal takes only what it names, an unanswered webhook is
sent again while a refused one is not, and a path an emulator gap blocks is reported SKIPPED."""

from __future__ import annotations

import itertools
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from vary_region_local.rehearsal import iam, mutants, workarounds
from vary_region_local.rehearsal import provider as provider_module
from vary_region_local.rehearsal.__main__ import summarize
from vary_region_local.rehearsal.denials import found_in
from vary_region_local.rehearsal.emulator import Certificate
from vary_region_local.rehearsal.provider import RehearsalProvider, answered
from vary_region_local.rehearsal.report import Report

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = (ROOT / "template.yaml").read_text()


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


def test_a_path_a_gap_blocks_is_summed_up_skipped_with_its_reason_never_passed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report = Report()
    report.run("plain job", lambda: "COMPLETED")
    gap = workarounds.CALLBACK_TASK_IAM
    report.skip("sample workflow", f"MiniStack {gap.seen_in} ({gap.name}): {gap.reason}")
    assert report.passed == [("plain job", "COMPLETED")]
    assert summarize(report, "", 1.0, tmp_path) == 0
    summary = capsys.readouterr().out
    assert "SKIPPED  sample workflow: MiniStack 1.5.33 (callback-task-iam): Step Functions runs" in summary
    assert "1 passed, 0 failed, 1 skipped" in summary
    assert "PASS     sample workflow" not in summary


def test_every_iam_mutant_names_a_statement_its_function_has_and_a_path_the_rehearsal_runs() -> None:
    loaded = mutants.load()
    assert len(loaded) >= 10
    for mutant in loaded:
        assert mutant.path in mutants.PATHS, mutant.name
        assert " denied " in mutant.denied, mutant.name
        if mutant.managed_policy:
            assert f"\n  {mutant.managed_policy}:\n    Type: AWS::IAM::ManagedPolicy" in TEMPLATE, mutant.name
            continue
        resource = TEMPLATE[TEMPLATE.index(f"\n  {mutant.function}:\n") :]
        resource = resource[: resource.index("\n\n  ")]  # up to the next resource
        assert f"- Sid: {mutant.statement}\n" in resource, mutant.name
        if mutant.action:
            statement = resource[resource.index(f"- Sid: {mutant.statement}\n") :].split("- Sid:", 2)[1]
            assert mutant.action in statement, mutant.name


def test_two_neighbouring_iam_mutants_never_look_for_the_same_denial() -> None:
    """A call denied just before a role is restored may be logged in the next mutant's window: it
    must not be able to pass for the next mutant's own denial."""
    loaded = mutants.load()
    for before, after in itertools.pairwise(loaded):
        assert before.denied not in after.denied and after.denied not in before.denied, (before.name, after.name)


def test_a_removal_takes_the_statement_or_only_its_action_and_leaves_the_rest() -> None:
    document: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Keep", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
            {"Sid": "Write", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"], "Resource": "*"},
        ],
    }
    gone = iam.without(document, iam.Removal("fn", statement="Write"))
    assert [s["Sid"] for s in gone["Statement"]] == ["Keep"]
    less = iam.without(document, iam.Removal("fn", statement="Write", action="s3:PutObject"))
    assert less["Statement"][1]["Action"] == ["s3:AbortMultipartUpload"]
    assert iam.without(document, iam.Removal("fn", statement="Keep", action="s3:GetObject"))["Statement"] == [
        document["Statement"][1]
    ]
    assert len(document["Statement"]) == 2 and document["Statement"][1]["Action"][0] == "s3:PutObject"  # untouched


class _Answers(BaseHTTPRequestHandler):
    """Answers each POST with the next status of the server's list (the last one repeats)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        statuses: list[int] = self.server.statuses  # type: ignore[attr-defined]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _post_through_provider(statuses: list[int]) -> list[dict[str, Any]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    server.statuses = statuses  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = RehearsalProvider(Certificate(Path("cert.pem"), Path("key.pem")), "https://127.0.0.1:4999")
        provider._post_webhook(f"http://127.0.0.1:{server.server_address[1]}/webhook/j", "s", b"{}")
        return provider.webhook_log
    finally:
        server.shutdown()
        server.server_close()


def test_a_webhook_without_an_answer_is_sent_again_until_the_api_answers() -> None:
    attempts = _post_through_provider([503, 200])
    seen = [(a["answer"], a["attempt"], a.get("gave_up", False)) for a in attempts]
    assert seen == [(503, 1, False), (200, 2, False)]


def test_a_webhook_never_answered_is_marked_given_up_after_its_resends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider_module, "WEBHOOK_RESEND_SECONDS", 2.5)  # resends 1 s, then 2 s apart
    attempts = _post_through_provider([503])
    assert [(a["answer"], a["attempt"], a.get("gave_up", False)) for a in attempts] == [(503, 1, False), (503, 2, True)]


def test_a_refused_webhook_is_never_sent_again() -> None:
    attempts = _post_through_provider([401, 200])
    assert [(a["answer"], a["attempt"]) for a in attempts] == [(401, 1)]
    assert not answered("ReadTimeout") and not answered(502) and answered(401) and answered(200)
