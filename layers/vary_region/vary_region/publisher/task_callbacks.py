"""Task answers sent through Step Functions' callback API (SendTaskSuccess / Failure / Heartbeat).

A token its workflow has closed (the task timed out, the execution ended or was stopped, a redelivered
record answering twice) can never be answered: those answers are logged and dropped, so one closed
task never holds back the stream. Any other error gives the record back to the stream, which retries
it, then bisects, then hands it to the publisher's failure queue. A token never reaches a log line:
only its job, the answer's kind and the error's code are logged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from vary_region.observability import logger
from vary_region.publisher.task_answer import AnswerKind, TaskAnswer

# The answers a closed task gets back: nothing will ever accept them.
CLOSED_TASK_ERRORS = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


class TaskCallbacks:
    def __init__(self, states: Any) -> None:
        self._states = states  # a boto3 Step Functions client

    def send(self, answers: Sequence[TaskAnswer]) -> list[TaskAnswer]:
        """Send every answer; returns those to try again (the caller reports their records failed)."""
        left: list[TaskAnswer] = []
        for answer in answers:
            try:
                self._send(answer)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                about = {"job_id": answer.job_id, "answer": str(answer.kind), "error_code": code}
                if code in CLOSED_TASK_ERRORS:
                    logger.warning("the waiting task is closed: answer dropped", extra=about)
                    continue
                logger.warning("task answer not sent: the stream gives its record back", extra=about)
                left.append(answer)
            except BotoCoreError as exc:  # Step Functions not reached (after botocore's retries)
                about = {"job_id": answer.job_id, "answer": str(answer.kind), "error_type": type(exc).__name__}
                logger.warning("task answer not sent: the stream gives its record back", extra=about)
                left.append(answer)
        return left

    def _send(self, answer: TaskAnswer) -> None:
        if answer.kind is AnswerKind.SUCCESS:
            output = json.dumps(answer.output, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            self._states.send_task_success(taskToken=answer.token, output=output)
        elif answer.kind is AnswerKind.FAILURE:
            self._states.send_task_failure(taskToken=answer.token, error=answer.error, cause=answer.cause)
        else:
            self._states.send_task_heartbeat(taskToken=answer.token)
