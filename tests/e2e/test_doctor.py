"""End to end, as a user checks a stack right after `sam deploy`: `vary-region doctor --stack-name`
against a local stack whose outputs are registered as a CloudFormation stack in its moto (the local
stack has no CloudFormation of its own: a tiny stack of one SNS topic, the alarm topic, carries the
local resources' names in its Outputs and the APIFRAME settings in its Parameters, as a deployed
stack does). The CLI runs in a process of its own and finds moto through AWS_ENDPOINT_URL, as it
would find an emulator. A healthy stack passes; a stack broken in one place fails, naming the cause."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.e2e.conftest import StackProcess, user_env

pytestmark = pytest.mark.e2e

PLACEHOLDER = "REPLACE_WITH_APIFRAME_API_KEY"


@pytest.fixture(scope="module")
def doctor_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """A stack of this module's own: the failing cases break it (and mend it) on purpose."""
    stack = StackProcess(tmp_path_factory.mktemp("state"), user_env(tmp_path_factory.mktemp("home")))
    stack.start()
    yield stack
    stack.stop()


def session(stack: StackProcess) -> Any:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=stack.info["region"])


def client(stack: StackProcess, service: str) -> Any:
    return session(stack).client(service, endpoint_url=stack.info["aws_endpoint_url"])


def register_stack(
    stack: StackProcess, *, event_bus: str | None = None, subscribed: bool = True, webhook_url: str | None = None
) -> str:
    """A CloudFormation stack whose outputs and parameters describe the local stack."""
    info = stack.info
    topic: dict[str, Any] = {"Type": "AWS::SNS::Topic", "Properties": {}}
    if subscribed:
        topic["Properties"]["Subscription"] = [{"Protocol": "email", "Endpoint": "ops@example.com"}]
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {name: {"Type": "String"} for name in ("ApiframeApiVersion", "ApiframeBaseUrl")},
        "Resources": {"AlarmTopic": topic},
        "Outputs": {
            "JobsBucketName": {"Value": info["bucket"]},
            "JobsTableName": {"Value": info["table"]},
            "WebhookUrl": {"Value": webhook_url or info["webhook_url"]},
            "EventBusName": {"Value": event_bus or info["event_bus_name"]},
            "SubmitQueueUrl": {"Value": info["queue_url"]},
            "AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
            "ApiKeySecretArn": {"Value": info["api_key_secret_id"]},
        },
    }
    name = f"doctor-{uuid.uuid4().hex[:8]}"
    client(stack, "cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[
            {"ParameterKey": "ApiframeApiVersion", "ParameterValue": info["apiframe_api_version"]},
            {"ParameterKey": "ApiframeBaseUrl", "ParameterValue": info["apiframe_base_url"]},
        ],
    )
    return name


def doctor(stack: StackProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = user_env(home) | {
        "AWS_ENDPOINT_URL": stack.info["aws_endpoint_url"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": stack.info["region"],
    }
    return subprocess.run(
        [sys.executable, "-m", "vary_region_cli.main", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each check's name -> its line (outcome first), as printed."""
    found = {}
    for line in result.stdout.splitlines():
        word = line[:5].strip()
        if word in ("PASS", "FAIL", "WARN", "SKIP"):
            found[line[6:26].strip()] = line
    return found


def simulator_stats(stack: StackProcess) -> dict[str, int]:
    with urllib.request.urlopen(stack.info["apiframe_base_url"] + "/_sim/stats", timeout=5) as response:
        stats: dict[str, int] = json.loads(response.read())
    return stats


def probe_traces(stack: StackProcess) -> list[str]:
    """What a doctor run could leave behind: probe objects and items, temporary queues and rules."""
    s3, info = client(stack, "s3"), stack.info
    listed = s3.list_object_versions(Bucket=info["bucket"])
    objects = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
    keys = [o["Key"] for o in objects if "doctor-probe-" in o["Key"]]
    items = client(stack, "dynamodb").scan(TableName=info["table"]).get("Items", [])
    jobs = [i["job_id"]["S"] for i in items if i["job_id"]["S"].startswith("doctor-probe-")]
    queues = client(stack, "sqs").list_queues(QueueNamePrefix="vary-region-watch-").get("QueueUrls", [])
    rules = client(stack, "events").list_rules(EventBusName=info["event_bus_name"], NamePrefix="vary-region-watch-")
    return keys + jobs + queues + [rule["Name"] for rule in rules.get("Rules", [])]


def test_doctor_passes_a_healthy_stack_spends_nothing_and_leaves_nothing(
    doctor_stack: StackProcess, tmp_path: Path
) -> None:
    name = register_stack(doctor_stack)
    before = simulator_stats(doctor_stack)

    result = doctor(doctor_stack, tmp_path, "--stack-name", name, "--timeout", "30")

    assert result.returncode == 0, result.stdout + result.stderr
    checks = outcomes(result)
    assert set(checks) == {
        "stack outputs", "API key", "probe job", "state-change event", "clean-up", "webhook route", "alarm subscribers"
    }  # fmt: skip
    assert [line for line in checks.values() if not line.startswith("PASS")] == []
    assert "REJECTED (MASK_NOT_IMAGE) + error.json" in checks["probe job"]
    after = simulator_stats(doctor_stack)
    paid = ("tasks_created", "inpaint_calls", "imagine_calls", "upscale_calls", "credits_spent", "fetch_calls")
    assert {k: after.get(k) for k in paid} == {k: before.get(k) for k in paid}
    assert probe_traces(doctor_stack) == []
    assert "sim-local-api-key" not in result.stdout + result.stderr  # the key is never printed


def test_doctor_fails_when_the_secret_still_holds_the_placeholder(doctor_stack: StackProcess, tmp_path: Path) -> None:
    secrets = client(doctor_stack, "secretsmanager")
    secret_id = doctor_stack.info["api_key_secret_id"]
    real = secrets.get_secret_value(SecretId=secret_id)["SecretString"]
    secrets.put_secret_value(SecretId=secret_id, SecretString=PLACEHOLDER)
    try:
        result = doctor(doctor_stack, tmp_path, "--stack-name", register_stack(doctor_stack), "--timeout", "30")
    finally:
        secrets.put_secret_value(SecretId=secret_id, SecretString=real)

    assert result.returncode == 1, result.stdout + result.stderr
    line = outcomes(result).get("API key", "")
    assert line.startswith("FAIL") and "still holds the template's placeholder" in line
    assert "put-secret-value" in result.stdout
    assert outcomes(result).get("probe job", "").startswith("PASS")  # the probe needs no key


def test_doctor_fails_naming_the_missing_inbox_notification(doctor_stack: StackProcess, tmp_path: Path) -> None:
    s3, bucket = client(doctor_stack, "s3"), doctor_stack.info["bucket"]
    notification = s3.get_bucket_notification_configuration(Bucket=bucket)
    notification.pop("ResponseMetadata", None)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    try:
        result = doctor(doctor_stack, tmp_path, "--stack-name", register_stack(doctor_stack), "--timeout", "4")
    finally:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=notification)

    assert result.returncode == 1, result.stdout + result.stderr
    line = outcomes(result).get("probe job", "")
    assert line.startswith("FAIL") and "no notification of new inbox/ objects" in line
    assert outcomes(result).get("clean-up", "").startswith("PASS")
    assert probe_traces(doctor_stack) == []


def test_doctor_fails_when_no_state_change_reaches_the_stacks_bus_and_warns_of_no_subscriber(
    doctor_stack: StackProcess, tmp_path: Path
) -> None:
    # The stack names a bus the publisher does not put on: as if its events never got there.
    other = f"doctor-other-{uuid.uuid4().hex[:6]}"
    client(doctor_stack, "events").create_event_bus(Name=other)
    name = register_stack(doctor_stack, event_bus=other, subscribed=False)

    result = doctor(doctor_stack, tmp_path, "--stack-name", name, "--timeout", "10")

    assert result.returncode == 1, result.stdout + result.stderr
    checks = outcomes(result)
    assert checks.get("probe job", "").startswith("PASS")
    event = checks.get("state-change event", "")
    assert event.startswith("FAIL") and f"no state-change event for the probe reached bus {other}" in event
    assert checks.get("alarm subscribers", "").startswith("WARN")
    assert "aws sns subscribe --topic-arn" in result.stdout


def test_doctor_fails_when_the_webhook_route_does_not_answer_401(doctor_stack: StackProcess, tmp_path: Path) -> None:
    # A URL the HTTP API has no route for: 404, as a stack deployed without its webhook route answers.
    name = register_stack(doctor_stack, webhook_url=doctor_stack.info["webhook_url"].replace("/webhook", "/hooks"))

    result = doctor(doctor_stack, tmp_path, "--stack-name", name, "--timeout", "30")

    assert result.returncode == 1, result.stdout + result.stderr
    line = outcomes(result).get("webhook route", "")
    assert line.startswith("FAIL") and "answered 404: the route POST /webhook/{job_id} is missing" in line

    # An emulator's HTTP API may answer at another address than the stack's output: --webhook-url.
    real = doctor_stack.info["webhook_url"]
    given = doctor(doctor_stack, tmp_path, "--stack-name", name, "--webhook-url", real, "--timeout", "30")
    assert given.returncode == 0, given.stdout + given.stderr
    assert outcomes(given).get("webhook route", "").startswith("PASS")


def test_doctor_checks_the_local_stack_from_its_stack_file(doctor_stack: StackProcess, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "vary_region_cli.main", "--stack-file", str(doctor_stack.stack_file), "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=user_env(home),
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    checks = outcomes(result)
    assert checks.get("probe job", "").startswith("PASS")
    assert checks.get("alarm subscribers", "").startswith("SKIP")
