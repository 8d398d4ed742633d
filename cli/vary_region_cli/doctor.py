"""`vary-region doctor`: a zero-credit check of a deployed stack, for whoever just ran `sam deploy`.

It reads the stack's outputs (and the submit function's configuration, as the functions get it),
checks that the API key is set and that APIFRAME accepts it (a free account read), drops a probe job
whose mask is deliberately not an image into the inbox and follows it to REJECTED and its
error.json (the bucket's notification, the submit queue, the submit function and its permissions),
catches the probe's state-change event on the bus with a temporary rule and queue of its own, posts
an unsigned webhook that must be refused with 401, and looks for a subscriber on the alarm topic.
Each check says pass, fail or warn, why, and what to do; every trace of the probe is removed after.
Nothing is ever sent to APIFRAME but the account read: no credit is spent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO

from vary_region_cli.config import Target

# samconfig.toml's stack name: what `sam deploy --guided` suggests.
DEFAULT_STACK_NAME = "vary-region"
# Each generation's API when the stack leaves ApiframeBaseUrl empty (vary_region.settings.GENERATIONS).
DEFAULT_BASE_URLS = {"v1": "https://api.apiframe.pro", "v2": "https://api.apiframe.ai"}
# The outputs the checks need; an older template's stack lacks some.
REQUIRED_OUTPUTS = ("JobsBucketName", "JobsTableName", "WebhookUrl", "EventBusName", "AlarmTopicArn")
# What the submit function's environment says, in the names the functions read.
FUNCTION_VARIABLES = (
    "APIFRAME_API_VERSION",
    "APIFRAME_BASE_URL",
    "APIFRAME_API_KEY_SECRET_ID",
    "APIFRAME_API_KEY_PARAMETER",
)


class Outcome(StrEnum):
    PASS = "PASS"  # noqa: S105 - a check's outcome, not a password
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    reason: str
    fix: str = ""


@dataclass
class StackFacts:
    """What the checks need to know about the stack, from wherever it was read."""

    where: str
    bucket: str
    table: str
    webhook_url: str
    event_bus: str
    api_version: str
    apiframe_base_url: str
    api_key_secret_id: str = ""
    api_key_parameter: str = ""
    alarm_topic_arn: str = ""
    submit_queue_url: str = ""
    stack_name: str = ""  # empty for the local stack
    local: bool = False

    def log_group(self, role: str) -> str:
        return f"/aws/lambda/{self.stack_name}-{role}" if self.stack_name else f"the local stack's log ({role})"


def read_facts(target: Target) -> tuple[Check, StackFacts | None]:
    """The first check: the stack's outputs are readable (or the local stack's stack.json)."""
    name = "stack outputs"
    if target.local:
        info = target.stack_info
        facts = StackFacts(
            where=f"the local stack ({target.stack_file})",
            bucket=str(info["bucket"]),
            table=str(info["table"]),
            webhook_url=str(info.get("webhook_url") or ""),
            event_bus=str(info.get("event_bus_name") or ""),
            api_version=str(info.get("apiframe_api_version") or "v1"),
            apiframe_base_url=str(info.get("apiframe_base_url") or ""),
            api_key_secret_id=str(info.get("api_key_secret_id") or ""),
            submit_queue_url=str(info.get("queue_url") or ""),
            local=True,
        )
        return Check(name, Outcome.PASS, f"read {target.stack_file}"), facts
    from botocore.exceptions import BotoCoreError, ClientError

    stack_name = target.stack_name or DEFAULT_STACK_NAME
    try:
        stacks = target.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return Check(
            name,
            Outcome.FAIL,
            f"stack {stack_name} cannot be read: {error.get('Code')}: {error.get('Message')}",
            "name the stack `sam deploy` created with --stack-name NAME, in its region (--region, AWS_REGION), "
            "with credentials allowed cloudformation:DescribeStacks",
        ), None
    except BotoCoreError as exc:
        reason = f"CloudFormation cannot be reached: {exc}"
        return Check(name, Outcome.FAIL, reason, "check --region, --endpoint-url and the network"), None
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    status = str(stack.get("StackStatus", ""))
    if not status.endswith("_COMPLETE") or "ROLLBACK" in status or status.startswith("DELETE"):
        return Check(
            name,
            Outcome.FAIL,
            f"stack {stack_name} is {status}",
            "see the stack's events (aws cloudformation describe-stack-events) and deploy again with sam deploy",
        ), None
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        return Check(
            name,
            Outcome.FAIL,
            f"stack {stack_name} has no output {', '.join(missing)}",
            "deploy this repository's template.yaml (sam build && sam deploy)",
        ), None
    facts = StackFacts(
        where=f"stack {stack_name}",
        bucket=outputs["JobsBucketName"],
        table=outputs["JobsTableName"],
        webhook_url=outputs["WebhookUrl"],
        event_bus=outputs["EventBusName"],
        alarm_topic_arn=outputs["AlarmTopicArn"],
        submit_queue_url=outputs.get("SubmitQueueUrl", ""),
        stack_name=stack_name,
        api_version="",
        apiframe_base_url="",
    )
    _provider_settings(facts, target, outputs, parameters)
    return Check(name, Outcome.PASS, f"{status}; bucket {facts.bucket}, table {facts.table}"), facts


def _provider_settings(
    facts: StackFacts, target: Target, outputs: Mapping[str, str], parameters: Mapping[str, str]
) -> None:
    """APIFRAME's generation, base URL and key source as the functions get them: the submit
    function's environment; the stack's parameters where that cannot be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        configuration = target.client("lambda").get_function_configuration(FunctionName=f"{facts.stack_name}-submit")
        variables: Mapping[str, str] = (configuration.get("Environment") or {}).get("Variables") or {}
    except (ClientError, BotoCoreError):
        variables = {}
    if not any(name in variables for name in FUNCTION_VARIABLES):
        variables = {
            "APIFRAME_API_VERSION": parameters.get("ApiframeApiVersion", ""),
            "APIFRAME_BASE_URL": parameters.get("ApiframeBaseUrl", ""),
            "APIFRAME_API_KEY_SECRET_ID": outputs.get("ApiKeySecretArn") or parameters.get("ApiKeySecretArn", ""),
            "APIFRAME_API_KEY_PARAMETER": parameters.get("ApiKeyParameterName", ""),
        }
    facts.api_version = variables.get("APIFRAME_API_VERSION") or "v1"
    facts.apiframe_base_url = variables.get("APIFRAME_BASE_URL") or DEFAULT_BASE_URLS.get(facts.api_version, "")
    facts.api_key_secret_id = variables.get("APIFRAME_API_KEY_SECRET_ID") or ""
    facts.api_key_parameter = variables.get("APIFRAME_API_KEY_PARAMETER") or ""


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Report:
    out: TextIO
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> None:
        self.checks.append(check)
        self.out.write(render(check) + "\n")
        self.out.flush()

    def count(self, outcome: Outcome) -> int:
        return sum(check.outcome is outcome for check in self.checks)

    @property
    def failed(self) -> bool:
        return self.count(Outcome.FAIL) > 0

    def summary(self) -> str:
        warnings = self.count(Outcome.WARN)
        counts = [
            (self.count(Outcome.PASS), "passed"),
            (self.count(Outcome.FAIL), "failed"),
            (warnings, "warning" if warnings == 1 else "warnings"),
            (self.count(Outcome.SKIP), "skipped"),
        ]
        return ", ".join(f"{n} {word}" for n, word in counts if n or word in ("passed", "failed"))


NAME_WIDTH = 20


def render(check: Check) -> str:
    line = f"{check.outcome.value:<5} {check.name:<{NAME_WIDTH}} {check.reason}"
    if check.fix and check.outcome is not Outcome.PASS:
        line += f"\n{'':<{NAME_WIDTH + 6}}fix: {check.fix}"
    return line


def run(
    target: Target,
    timeout: float,
    *,
    webhook_url: str | None = None,
    out: TextIO | None = None,
    clock: Callable[[], float] | None = None,
) -> bool:
    """Every check, printed as it ends; True when none failed. `webhook_url` replaces the stack's
    WebhookUrl (an emulator's HTTP APIs may answer at another address than AWS's)."""
    from vary_region_cli import doctor_checks, doctor_probe

    report = Report(out or sys.stdout)
    first, facts = read_facts(target)
    report.out.write(f"vary-region doctor: {facts.where if facts else target.stack_name or DEFAULT_STACK_NAME}\n")
    report.add(first)
    if facts is None:
        report.out.write(report.summary() + "\n")
        return False
    if webhook_url:
        facts.webhook_url = webhook_url
    report.add(doctor_checks.check_api_key(target, facts))
    probe = doctor_probe.Probe(target, facts, timeout, **({"clock": clock} if clock else {}))
    for check in probe.run():
        report.add(check)
    report.add(doctor_checks.check_webhook(facts, probe.job_id))
    report.add(doctor_checks.check_alarm_subscribers(target, facts))
    report.out.write(report.summary() + "\n")
    return not report.failed


def extra(value: Any) -> str:
    """A value for a message: short, one line."""
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else text[:197] + "..."
