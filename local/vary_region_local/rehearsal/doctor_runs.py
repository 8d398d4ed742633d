"""`vary-region doctor` against the deployed stack, as a user runs it right after `sam deploy`, and
against two broken variants of it: the API key secret put back to its placeholder, and the submit
function's role without the statement that writes error.json. Doctor must pass the first (a warning
only for the alarm topic's subscriber) and fail each variant naming its cause; the stack is restored
after each.

Doctor runs as its own process with this process's environment: the emulator's AWS_ENDPOINT_URL and
AWS_CA_BUNDLE (the rehearsal's certificate), and REQUESTS_CA_BUNDLE for the simulator's TLS. Its
`--webhook-url` is the emulator's address of the deployed HTTP API (provider.gateway), since the
stack's WebhookUrl output names AWS's host.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
from vary_region_cli.doctor_checks import PLACEHOLDER_API_KEY

from vary_region_local.rehearsal import iam
from vary_region_local.rehearsal.paths import Pipeline
from vary_region_local.rehearsal.provider import API_KEY
from vary_region_local.rehearsal.report import PathFailed

PROBE_TIMEOUT = 40  # doctor's --timeout: the probe's REJECTED and error.json each come in seconds
BROKEN_PROBE_TIMEOUT = 15  # a probe whose error.json cannot be written waits all of it


def doctor(pipeline: Pipeline, timeout: int = PROBE_TIMEOUT) -> tuple[int, list[str]]:
    """(exit code, lines) of one `vary-region doctor --stack-name ... --webhook-url ...`."""
    command = [str(Path(sys.executable).with_name("vary-region")), "doctor", "--stack-name", pipeline.stack.name]
    command += ["--webhook-url", pipeline.provider.gateway(pipeline.stack.outputs["WebhookUrl"])]
    command += ["--timeout", str(timeout)]
    done = subprocess.run(  # noqa: S603 - the project's own CLI, our arguments
        command, capture_output=True, text=True, env=dict(os.environ), timeout=timeout * 3 + 60, check=False
    )
    return done.returncode, (done.stdout + done.stderr).splitlines()


def _outcomes(lines: list[str]) -> dict[str, str]:
    """check name -> its whole line, for the lines doctor prints as `OUTCOME name reason`."""
    found = {}
    for line in lines:
        outcome = line.split(" ", 1)[0]
        if outcome in ("PASS", "FAIL", "WARN", "SKIP"):
            found[line] = outcome
    return found


def check_healthy(pipeline: Pipeline) -> str:
    code, lines = doctor(pipeline)
    outcomes = _outcomes(lines)
    bad = [line for line, outcome in outcomes.items() if outcome == "FAIL" or outcome == "SKIP"]
    warned = [line for line, outcome in outcomes.items() if outcome == "WARN"]
    if code != 0 or bad or any("alarm" not in line for line in warned):
        raise PathFailed(f"doctor exit {code} on the deployed stack: {bad or warned or lines[-5:]}")
    passed = sum(outcome == "PASS" for outcome in outcomes.values())
    return f"exit 0: {passed} checks passed, {len(warned)} warning (the alarm topic: no subscriber); {lines[-1]}"


def check_placeholder_secret(pipeline: Pipeline) -> str:
    secrets = boto3.client("secretsmanager")
    secret = pipeline.stack.outputs["ApiKeySecretArn"]
    secrets.put_secret_value(SecretId=secret, SecretString=PLACEHOLDER_API_KEY)
    try:
        code, lines = doctor(pipeline)
    finally:
        secrets.put_secret_value(SecretId=secret, SecretString=API_KEY)
    return _failed_naming(code, lines, "API key", [secret, "placeholder"], "the secret left as the placeholder")


def check_removed_permission(pipeline: Pipeline) -> str:
    removal = iam.Removal(pipeline.stack.function_name("SubmitFunction"), statement="WriteResults")
    with iam.removed(removal) as what:
        code, lines = doctor(pipeline, timeout=BROKEN_PROBE_TIMEOUT)
    return _failed_naming(code, lines, "probe job", ["error.json", "was not written"], what)


def _failed_naming(code: int, lines: list[str], check: str, words: list[str], variant: str) -> str:
    failed = [line for line, outcome in _outcomes(lines).items() if outcome == "FAIL"]
    named = [line for line in failed if line.split(None, 1)[1].startswith(check)]
    if code != 1 or not named or not all(word in named[0] for word in words):
        raise PathFailed(f"doctor with {variant}: exit {code}, failures {failed}; wanted {check!r} naming {words}")
    return f"{variant}: exit 1, {' '.join(named[0].split())[:220]}"
