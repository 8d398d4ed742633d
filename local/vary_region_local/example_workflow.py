"""`make example-workflow`: examples/stepfunctions/vary-regions.asl.json run on the local stack.

The workflow is created in the stack's Step Functions (moto, which runs it), started with
examples/stepfunctions/input.json (the stack's submit queue filled in, and each job id made this
run's own), and waited for; its last step's output, the images of each job, is printed. Exit 0 when
it succeeded. The stack must answer the workflow: start it with CALLER_STATE_MACHINE_ARNS naming
it (docs/step-functions.md), or every job is refused with TASK_TOKEN_NOT_ALLOWED.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from vary_region_local.lambda_runtime import REPO_ROOT
from vary_region_local.moto_process import LOCAL_CREDENTIALS
from vary_region_local.process import read_stack_file

EXAMPLE = REPO_ROOT / "examples" / "stepfunctions"
MACHINE_NAME = "vary-region-example"
ROLE = "arn:aws:iam::123456789012:role/vary-region-example"  # moto checks no role


def run(stack_file: Path, timeout: float) -> int:
    info = read_stack_file(stack_file)
    if info is None:
        print(f"no running local stack ({stack_file}): start one with `make local`", file=sys.stderr)
        return 2
    session = boto3.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=info["region"],
    )
    sfn = session.client("stepfunctions", endpoint_url=info["aws_endpoint_url"])
    machine = _machine(sfn)
    run_id = uuid.uuid4().hex[:6]
    workflow_input = json.loads((EXAMPLE / "input.json").read_text(encoding="utf-8"))
    workflow_input["submit_queue_url"] = info["queue_url"]
    for region in workflow_input["regions"]:
        region["job_id"] = f"{region['job_id']}-{run_id}"
    execution = sfn.start_execution(
        stateMachineArn=machine, name=f"example-{run_id}", input=json.dumps(workflow_input)
    )["executionArn"]
    print(f"started {execution}", flush=True)
    described = _finished(sfn, execution, timeout)
    if described["status"] != "SUCCEEDED":
        print(f"the workflow ended {described['status']}: {_failure(sfn, execution)}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(described["output"]), indent=2))
    return 0


def _machine(sfn: Any) -> str:
    """The example's state machine, created once per stack (its definition updated if changed)."""
    definition = (EXAMPLE / "vary-regions.asl.json").read_text(encoding="utf-8")
    for machine in sfn.list_state_machines()["stateMachines"]:
        if machine["name"] == MACHINE_NAME:
            sfn.update_state_machine(stateMachineArn=machine["stateMachineArn"], definition=definition)
            return str(machine["stateMachineArn"])
    created = sfn.create_state_machine(name=MACHINE_NAME, definition=definition, roleArn=ROLE)
    return str(created["stateMachineArn"])


def _finished(sfn: Any, execution: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.5)


def _failure(sfn: Any, execution: str) -> str:
    events = sfn.get_execution_history(executionArn=execution)["events"]
    errors = [
        details.get("error")
        for event in events
        for key, details in event.items()
        if key.endswith("FailedEventDetails") and isinstance(details, dict)
    ]
    return ", ".join(sorted({str(error) for error in errors if error})) or "no error recorded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make example-workflow", description=__doc__)
    parser.add_argument("--stack-file", type=Path, default=REPO_ROOT / ".local" / "stack.json")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the workflow")
    args = parser.parse_args(argv)
    return run(args.stack_file, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
