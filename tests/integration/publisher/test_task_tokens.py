"""Given the local stack (moto over HTTP, its Step Functions executing state machines), when a job
carries a `task_token`: with no CallerStateMachineArns the job is refused before anything is paid;
and the publisher's answers, sent to a real waiting task, close it once, while an answer for a task
already closed (a redelivered record, a stopped execution) is logged without the token and dropped,
never failing the stream's batch; an unreachable Step Functions gives the record back."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from vary_region.publisher.publisher import EventPublisher, StateChangePublisher
from vary_region.publisher.task_callbacks import TaskCallbacks

from tests.support.builders import mask_png, new_job_id
from tests.support.recorders import ProviderRecorder
from tests.support.waits import read_error_json, wait_for_job, wait_until
from tests.unit.publisher.test_state_change import record

ACCOUNT = "123456789012"


class CallsRecorded:
    """A real Step Functions client whose calls are also noted, so a test can assert the answer the
    publisher sent at once, before moto's execution acts on it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return method(**kwargs)

        return call


class WaitingTask:
    """A workflow of the test's own whose callback task sends its token to a queue and waits."""

    def __init__(self, timeout_seconds: int | None = None) -> None:
        self.sfn = boto3.client("stepfunctions")
        self.sqs = boto3.client("sqs")
        name = f"caller-{uuid.uuid4().hex[:8]}"
        self.queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        task = {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {"QueueUrl": self.queue, "MessageBody": {"token.$": "$$.Task.Token"}},
            "End": True,
        }
        if timeout_seconds is not None:
            task["TimeoutSeconds"] = timeout_seconds
        self.machine = self.sfn.create_state_machine(
            name=name,
            definition=json.dumps({"StartAt": "Wait", "States": {"Wait": task}}),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/caller",
        )["stateMachineArn"]
        self.execution = self.sfn.start_execution(stateMachineArn=self.machine, name=name)["executionArn"]
        self.token = str(wait_until(self._token, 20, message="the callback task's message"))

    def _token(self) -> str | None:
        messages = self.sqs.receive_message(QueueUrl=self.queue, WaitTimeSeconds=1).get("Messages", [])
        return json.loads(messages[0]["Body"])["token"] if messages else None

    def status(self) -> str:
        return str(self.sfn.describe_execution(executionArn=self.execution)["status"])

    def close(self) -> None:
        self.sqs.delete_queue(QueueUrl=self.queue)


@pytest.fixture()
def waiting(stack: Any) -> Iterator[WaitingTask]:
    task = WaitingTask()
    yield task
    task.close()


def _logged(caplog: Any) -> str:
    """Every captured record with all its fields (the JSON log line carries its extra keys too)."""
    return "\n".join(str(vars(record)) for record in caplog.records)


def _publisher(stack: Any, states: Any) -> StateChangePublisher:
    events = EventPublisher(boto3.client("events"), stack.info.event_bus_name)
    return StateChangePublisher(events, stack.info.bucket, TaskCallbacks(states))


def _completed(token: str, sequence: str = "100") -> dict[str, Any]:
    job = {"job_id": new_job_id("answered"), "task_token": token, "updated_at": "2026-12-01T12:00:00.000Z"}
    result = {"result_json": "results/x/result.json", "images": {"1": "results/x/1.png"}}
    stream_record = record(job | {"status": "COMPLETED", "result": result}, job | {"status": "PROCESSING"})
    stream_record["dynamodb"]["SequenceNumber"] = sequence
    return stream_record


def test_an_answer_closes_the_waiting_task_and_its_redelivery_is_dropped_not_failed(stack, waiting, caplog):
    caplog.set_level("INFO", logger="vary-region")
    publisher = _publisher(stack, boto3.client("stepfunctions"))
    completed = _completed(waiting.token)

    first = publisher.handle_stream_batch([completed])
    wait_until(lambda: waiting.status() == "SUCCEEDED", 20, message="the execution to succeed")
    again = publisher.handle_stream_batch([completed])

    assert first == again == {"batchItemFailures": []}
    output = json.loads(waiting.sfn.describe_execution(executionArn=waiting.execution)["output"])
    assert output["results"]["images"] == {"1": "results/x/1.png"}
    assert any(r.getMessage() == "the waiting task is closed: answer dropped" for r in caplog.records)
    assert waiting.token not in _logged(caplog)


def test_a_rejected_job_fails_the_waiting_task_with_its_code(stack, waiting):
    job = {"job_id": new_job_id("refused"), "task_token": waiting.token, "updated_at": "2026-12-01T12:00:00.000Z"}
    error = {"code": "MASK_LOCATION_INVALID", "message": "an s3:// mask must be under ...", "stage": "intake"}
    rejected = record(job | {"status": "REJECTED", "error": error}, job | {"status": "RECEIVED"})

    states = CallsRecorded(boto3.client("stepfunctions"))
    answer = _publisher(stack, states).handle_stream_batch([rejected])

    assert answer == {"batchItemFailures": []}
    sent = [(name, call.get("error")) for name, call in states.calls]
    assert sent == [("send_task_failure", "MASK_LOCATION_INVALID")]
    wait_until(lambda: waiting.status() == "FAILED", 20, message="the execution to fail")
    events = waiting.sfn.get_execution_history(executionArn=waiting.execution)["events"]
    failed = [e["executionFailedEventDetails"] for e in events if e["type"] == "ExecutionFailed"]
    assert failed[-1]["error"] == "MASK_LOCATION_INVALID"


def test_an_answer_for_a_timed_out_task_is_logged_without_the_token_and_dropped(stack, caplog):
    caplog.set_level("INFO", logger="vary-region")
    waiting = WaitingTask(timeout_seconds=1)
    wait_until(lambda: waiting.status() == "FAILED", 20, message="the task to time out")

    answer = _publisher(stack, boto3.client("stepfunctions")).handle_stream_batch([_completed(waiting.token)])

    assert answer == {"batchItemFailures": []}
    dropped = [r for r in caplog.records if r.getMessage() == "the waiting task is closed: answer dropped"]
    assert dropped and dropped[0].error_code in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist")
    assert waiting.token not in _logged(caplog)
    waiting.close()


def test_an_unreachable_step_functions_gives_the_record_back(stack, waiting, caplog):
    caplog.set_level("INFO", logger="vary-region")
    nowhere = boto3.client(
        "stepfunctions",
        endpoint_url="http://127.0.0.1:9",  # discard: nothing listens
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )

    answer = _publisher(stack, nowhere).handle_stream_batch([_completed(waiting.token, sequence="777")])

    assert answer == {"batchItemFailures": [{"itemIdentifier": "777"}]}
    assert waiting.status() == "RUNNING"
    assert waiting.token not in _logged(caplog)


def test_with_no_caller_state_machines_a_job_with_a_token_is_refused_and_nothing_paid(
    stack, sim, s3, table, monkeypatch
):
    provider = ProviderRecorder.install(sim, monkeypatch)
    job_id = new_job_id("token-refused")
    token = f"AQC-{uuid.uuid4().hex}-a-token-this-stack-may-not-answer"
    mask = "data:image/png;base64," + base64.b64encode(mask_png()).decode()
    body = {"job_id": job_id, "parent_task_id": f"parent-{job_id}", "mask": mask, "task_token": token}

    boto3.client("sqs").send_message(QueueUrl=stack.info.queue_url, MessageBody=json.dumps(body))

    item = wait_for_job(table, job_id)
    assert item["status"] == "REJECTED" and item["error"]["code"] == "TASK_TOKEN_NOT_ALLOWED"
    assert "task_token" not in item
    error_json = read_error_json(s3, stack.info.bucket, job_id)
    assert error_json["error"]["code"] == "TASK_TOKEN_NOT_ALLOWED" and token not in json.dumps(error_json)
    assert provider.inpaint_calls(job_id) == 0
