"""End to end, as a team's workflow calls the pipeline: `make local` started with
CALLER_STATE_MACHINE_ARNS and MASK_SOURCES in its environment, and real state machines (moto's Step
Functions executing them) whose callback task sends a job to the submit queue with `$$.Task.Token`
and waits. The job's end answers the task: its four image keys as the task's output, or the job's
error code as the task's error; a stuck job trips HeartbeatSeconds; a duplicate delivery is one paid
task and one answer; an answer for a closed task is dropped (logged, without the token) and the
stream goes on; the token shows in no log line, result.json or error.json."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest
from vary_region.settings import GENERATIONS

from tests.e2e.conftest import API_VERSION, StackProcess, user_env
from tests.support.builders import mask_png
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e
ACCOUNT = "123456789012"  # moto's account
CALLERS = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:vary-region-caller-*"
MASK_BUCKET = "masks-of-another-service"
IMAGES = {"1", "2", "3", "4"}
INPAINT = GENERATIONS[API_VERSION][1][2]  # the generation's price of an inpaint


@pytest.fixture(scope="module")
def sfn_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    home = tmp_path_factory.mktemp("home")
    env = user_env(home) | {"CALLER_STATE_MACHINE_ARNS": CALLERS, "MASK_SOURCES": f"{MASK_BUCKET}/approved"}
    stack = StackProcess(tmp_path_factory.mktemp("state"), env)
    stack.start()
    yield stack
    stack.stop()


class Caller:
    """A team's side: its state machines, its executions, and what it can see of the pipeline."""

    def __init__(self, stack: StackProcess) -> None:
        info = stack.info
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        endpoint = info["aws_endpoint_url"]
        self.stack = stack
        self.info = info
        self.sfn = session.client("stepfunctions", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.s3 = session.client("s3", endpoint_url=endpoint)
        self.table = session.resource("dynamodb", endpoint_url=endpoint).Table(info["table"])

    def machine(self, heartbeat_seconds: int | None = None, queue_url: str | None = None) -> str:
        task: dict[str, Any] = {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {
                "QueueUrl": queue_url or self.info["queue_url"],
                "MessageBody": {
                    "job_id.$": "$.job_id",
                    "parent_task_id.$": "$.parent_task_id",
                    "mask.$": "$.mask",
                    "task_token.$": "$$.Task.Token",
                },
            },
            "End": True,
        }
        if heartbeat_seconds is not None:
            task["HeartbeatSeconds"] = heartbeat_seconds
        definition = {"StartAt": "VaryRegion", "States": {"VaryRegion": task}}
        return str(
            self.sfn.create_state_machine(
                name=f"vary-region-caller-{uuid.uuid4().hex[:8]}",
                definition=json.dumps(definition),
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/caller",
            )["stateMachineArn"]
        )

    def start(self, machine: str, job: dict[str, Any]) -> str:
        started = self.sfn.start_execution(stateMachineArn=machine, name=job["job_id"], input=json.dumps(job))
        return str(started["executionArn"])

    def finished(self, execution: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = self.sfn.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return dict(described)
            time.sleep(0.2)
        raise AssertionError(f"the execution still runs after {timeout}s:\n{self.stack.log_tail()}")

    def failure(self, execution: str) -> dict[str, Any]:
        """The callback task's failure as the workflow's history tells it (its error and cause), and
        the execution's own error."""
        events = self.sfn.get_execution_history(executionArn=execution)["events"]
        failed = [e["executionFailedEventDetails"] for e in events if e["type"] == "ExecutionFailed"]
        task = [e[key] for e in events for key in ("taskFailedEventDetails", "taskTimedOutEventDetails") if key in e]
        assert failed, [e["type"] for e in events]
        return dict(task[-1] if task else {}) | {"error": failed[-1].get("error")}

    def item(self, job_id: str) -> dict[str, Any]:
        return dict(self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item") or {})

    def wait_for_status(self, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.item(job_id)
            if item.get("status") in statuses:
                return item
            time.sleep(0.2)
        raise AssertionError(f"{job_id} never reached {statuses}: {self.item(job_id).get('status')}")

    def simulator(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.info['apiframe_base_url']}/_sim/{path}", data=data)
        with urllib.request.urlopen(request, timeout=10) as answer:
            loaded: dict[str, Any] = json.loads(answer.read())
            return loaded

    def log(self) -> str:
        return self.stack.log_path.read_text(encoding="utf-8", errors="replace")

    def documents(self, job_id: str) -> str:
        listed = self.s3.list_objects_v2(Bucket=self.info["bucket"], Prefix=f"results/{job_id}/").get("Contents", [])
        keys = [entry["Key"] for entry in listed if entry["Key"].endswith(".json")]
        return "".join(self.s3.get_object(Bucket=self.info["bucket"], Key=key)["Body"].read().decode() for key in keys)


@pytest.fixture()
def caller(sfn_stack: StackProcess) -> Iterator[Caller]:
    calling = Caller(sfn_stack)
    calling.simulator("reset", {})
    yield calling
    calling.simulator("reset", {})


def _job(prefix: str, **fields: Any) -> dict[str, Any]:
    job_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    mask = "data:image/png;base64," + base64.b64encode(mask_png()).decode()
    return {"job_id": job_id, "parent_task_id": f"parent-{job_id}", "mask": mask} | fields


def _assert_token_kept_secret(caller: Caller, job_id: str) -> None:
    token = caller.item(job_id)["task_token"]
    assert token not in caller.log()
    assert token not in caller.documents(job_id)


def test_a_workflow_waits_for_its_job_and_gets_the_four_image_keys(caller: Caller) -> None:
    job = _job("sfn-ok")

    execution = caller.finished(caller.start(caller.machine(), job))

    assert execution["status"] == "SUCCEEDED", caller.stack.log_tail()
    output = json.loads(execution["output"])
    assert output["job_id"] == job["job_id"] and output["status"] == "COMPLETED"
    assert set(output["results"]["images"]) >= IMAGES
    assert output["results"]["result_json"] == f"results/{job['job_id']}/result.json"
    item = caller.item(job["job_id"])
    assert output["tasks"] == [{"stage": "inpaint", "task_id": item["task_id"], "credits": INPAINT}]
    assert "task_token" not in execution["output"]
    _assert_token_kept_secret(caller, job["job_id"])


def test_a_refused_job_fails_the_workflow_with_its_code(caller: Caller) -> None:
    job = _job("sfn-refused", mask="s3://some-other-bucket/approved/mask.png")

    execution = caller.finished(caller.start(caller.machine(), job))

    assert execution["status"] == "FAILED"
    failure = caller.failure(execution["executionArn"])
    assert failure["error"] == "MASK_LOCATION_INVALID"
    # moto 5.2.5 keeps SendTaskFailure's error, not its cause (tests/unit/publisher prove the cause).
    assert caller.item(job["job_id"])["status"] == "REJECTED"
    _assert_token_kept_secret(caller, job["job_id"])


def test_a_failed_provider_task_fails_the_workflow_with_the_jobs_code(caller: Caller) -> None:
    caller.simulator("faults", {"fail_task": "the model refused"})
    job = _job("sfn-failed")

    execution = caller.finished(caller.start(caller.machine(), job))

    assert execution["status"] == "FAILED"
    item = caller.item(job["job_id"])
    assert item["status"] == "FAILED"
    assert caller.failure(execution["executionArn"])["error"] == item["error"]["code"] == "PROVIDER_TASK_FAILED"


def test_a_mask_from_an_allowed_source_is_read_and_one_beside_it_is_refused(caller: Caller) -> None:
    caller.s3.create_bucket(Bucket=MASK_BUCKET)
    caller.s3.put_object(Bucket=MASK_BUCKET, Key="approved/m.png", Body=mask_png(), ContentType="image/png")
    caller.s3.put_object(Bucket=MASK_BUCKET, Key="elsewhere/m.png", Body=mask_png(), ContentType="image/png")
    machine = caller.machine()
    allowed = _job("sfn-mask-ok", mask=f"s3://{MASK_BUCKET}/approved/m.png")
    beside = _job("sfn-mask-beside", mask=f"s3://{MASK_BUCKET}/elsewhere/m.png")

    ok, refused = (caller.start(machine, job) for job in (allowed, beside))

    assert caller.finished(ok)["status"] == "SUCCEEDED", caller.stack.log_tail()
    assert caller.finished(refused)["status"] == "FAILED"
    assert caller.failure(refused)["error"] == "MASK_LOCATION_INVALID"


def test_a_duplicate_delivery_of_the_same_request_is_one_paid_task_and_one_answer(caller: Caller) -> None:
    caller.simulator("faults", {"inpaint_response_delay": 1.0})  # the copy arrives while the first is under way
    job = _job("sfn-dup")
    execution = caller.start(caller.machine(), job)
    # The token is kept by the write after the job's first (RECEIVED): wait for it, not for the status.
    token = wait_until(lambda: caller.item(job["job_id"]).get("task_token"), 30, message="the job's token kept")
    body = {k: job[k] for k in ("job_id", "parent_task_id", "mask")} | {"task_token": token}
    caller.sqs.send_message(QueueUrl=caller.info["queue_url"], MessageBody=json.dumps(body))

    assert caller.finished(execution)["status"] == "SUCCEEDED"
    time.sleep(2)  # room for a second submission, were there one
    assert caller.simulator("stats")["tasks_created"] == 1


def test_a_request_that_is_not_strict_json_still_fails_its_workflow(caller: Caller) -> None:
    # A relay of the workflow's own (not Step Functions, which writes strict JSON) sends the job with
    # NaN in it: the request is refused at once, and its token still answered.
    relay = caller.sqs.create_queue(QueueName=f"relay-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    job = _job("sfn-nan")
    execution = caller.start(caller.machine(queue_url=relay), job)
    deadline = time.monotonic() + 20
    messages: list[dict[str, Any]] = []
    while not messages and time.monotonic() < deadline:
        messages = caller.sqs.receive_message(QueueUrl=relay, WaitTimeSeconds=1).get("Messages", [])
    relayed = json.loads(messages[0]["Body"])
    body = json.dumps(relayed)[:-1] + ', "metadata": {"score": NaN}}'

    caller.sqs.send_message(QueueUrl=caller.info["queue_url"], MessageBody=body)

    assert caller.finished(execution)["status"] == "FAILED"
    assert caller.failure(execution)["error"] == "SPEC_INVALID_JSON"
    _assert_token_kept_secret(caller, job["job_id"])


def test_a_stuck_job_trips_heartbeat_seconds_and_its_late_answer_is_dropped(caller: Caller) -> None:
    # No webhook reaches the stack: the job makes no progress until the reconciler (quiet for 10 s)
    # fetches its task, long after the workflow's 3 s without a heartbeat.
    caller.simulator("faults", {"drop_webhooks": "all"})
    job = _job("sfn-stuck")

    execution = caller.finished(caller.start(caller.machine(heartbeat_seconds=3), job))

    # The task timed out before the job ended (no TimeoutSeconds: only the heartbeat's). Told by the
    # two records' own times, not by how long the test waited: a loaded machine only delays both.
    assert execution["status"] == "FAILED", caller.stack.log_tail()
    assert caller.failure(execution["executionArn"])["error"] in ("States.Timeout", "States.HeartbeatTimeout")
    completed = caller.wait_for_status(job["job_id"], {"COMPLETED"}, timeout=60)
    completed_at = datetime.fromisoformat(str(completed["updated_at"]).replace("Z", "+00:00"))
    assert execution["stopDate"] < completed_at, (execution["stopDate"], completed_at)
    # The success owed to the closed task is never retried: moto either refuses it (then it is logged
    # and dropped; tests/integration/publisher/test_task_tokens.py proves that at the seam) or, for a
    # task it timed out a moment ago, accepts it silently. Either way no record goes back to the stream.
    time.sleep(2)
    assert not any("task answer not sent" in line and job["job_id"] in line for line in caller.log().splitlines())
    _assert_token_kept_secret(caller, job["job_id"])
    # The stream goes on: the next workflow is answered.
    caller.simulator("reset", {})
    assert caller.finished(caller.start(caller.machine(), _job("sfn-after")))["status"] == "SUCCEEDED"


def test_the_sample_workflows_map_finishes_with_every_regions_images(sfn_stack: StackProcess, caller: Caller) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "vary_region_local.example_workflow", "--stack-file", str(sfn_stack.stack_file)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert ran.returncode == 0, ran.stdout + ran.stderr + sfn_stack.log_tail()
    output = json.loads(ran.stdout[ran.stdout.index("{") :])
    assert len(output["jobs"]) == len(output["images"]) == 3
    assert all(set(images) >= IMAGES for images in output["images"])
