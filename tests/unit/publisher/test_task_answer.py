"""Which stream records owe a waiting Step Functions task an answer, and which: success with the job's
results on COMPLETED, failure with its code on REJECTED and FAILED, at most one heartbeat per minute
of progress, nothing for a job without a token or for writes after its end; the token in no repr."""

from __future__ import annotations

import itertools
import json

import pytest
from vary_region.publisher.state_change import state_change
from vary_region.publisher.task_answer import AnswerKind, task_answer

from tests.unit.publisher.test_state_change import record

BUCKET = "jobs-bucket"
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAc0tWjKLmZ9Qsecret-token-of-the-test"
JOB = {"job_id": "job-1", "task_token": TOKEN, "metadata_json": json.dumps({"order": 7})}
RESULT = {
    "result_json": "results/job-1/result.json",
    "images": {str(n): f"results/job-1/{n}.png" for n in range(1, 5)} | {"grid": "results/job-1/grid.png"},
}


def _at(second: int) -> str:
    """A write's updated_at, `second` seconds after 12:00:00."""
    return f"2026-12-01T12:{second // 60:02d}:{second % 60:02d}.000Z"


def test_the_completed_write_answers_success_with_the_results_tasks_and_metadata() -> None:
    completed = JOB | {
        "status": "COMPLETED",
        "updated_at": _at(90),
        "result": RESULT,
        "imagine_task_id": "t-imagine",
        "upscale_task_id": "t-upscale",
        "inpaint_task_id": "t-inpaint",
        "credits_reserved": {"imagine": 4, "upscale": 2, "inpaint": 4},
    }

    answer = task_answer(record(completed, JOB | {"status": "PROCESSING", "updated_at": _at(80)}), BUCKET)

    assert answer is not None and answer.kind is AnswerKind.SUCCESS and answer.token == TOKEN
    assert answer.output == {
        "job_id": "job-1",
        "status": "COMPLETED",
        "bucket": BUCKET,
        "results": RESULT,
        "tasks": [
            {"stage": "imagine", "task_id": "t-imagine", "credits": 4},
            {"stage": "upscale", "task_id": "t-upscale", "credits": 2},
            {"stage": "inpaint", "task_id": "t-inpaint", "credits": 4},
        ],
        "metadata": {"order": 7},
    }
    assert TOKEN not in json.dumps(answer.output) and TOKEN not in repr(answer)


@pytest.mark.parametrize("status", ["REJECTED", "FAILED"])
def test_a_rejected_or_failed_write_answers_failure_with_the_jobs_code_and_message(status: str) -> None:
    error = {"code": "MASK_LOCATION_INVALID", "message": "an s3:// mask must be under ...", "stage": "intake"}
    ended = JOB | {"status": status, "updated_at": _at(5), "error": error}

    answer = task_answer(record(ended, JOB | {"status": "RECEIVED", "updated_at": _at(1)}), BUCKET)

    assert answer is not None and answer.kind is AnswerKind.FAILURE
    assert (answer.error, answer.cause) == ("MASK_LOCATION_INVALID", "an s3:// mask must be under ...")


def test_a_write_after_the_end_answers_nothing_again() -> None:
    done = JOB | {"status": "COMPLETED", "updated_at": _at(200), "result": RESULT}

    assert task_answer(record(done | {"updated_at": _at(300)}, done), BUCKET) is None


def test_a_job_without_a_token_owes_no_answer() -> None:
    plain = {"job_id": "job-2", "status": "COMPLETED", "updated_at": _at(9), "result": RESULT}

    assert task_answer(record(plain, plain | {"status": "PROCESSING"}), BUCKET) is None


def test_progress_sends_at_most_one_heartbeat_per_minute_of_the_clock() -> None:
    # A write every 5 seconds for three minutes: the stream's records, each with the item before it.
    writes = [JOB | {"status": "PROCESSING", "percentage": n, "updated_at": _at(5 * n)} for n in range(36)]
    records = [record(new, old) for old, new in itertools.pairwise(writes)]

    answers = [task_answer(r, BUCKET) for r in records]
    heartbeats = [r for r, a in zip(records, answers, strict=True) if a is not None]

    assert all(a is None or a.kind is AnswerKind.HEARTBEAT for a in answers)
    minutes = [r["dynamodb"]["NewImage"]["updated_at"]["S"][:16] for r in heartbeats]
    assert minutes == ["2026-12-01T12:01", "2026-12-01T12:02"]  # one per new minute, none in between


def test_a_quiet_job_heartbeats_on_each_write() -> None:
    before = JOB | {"status": "SUBMITTED", "updated_at": _at(10)}
    later = JOB | {"status": "PROCESSING", "updated_at": _at(200)}

    answer = task_answer(record(later, before), BUCKET)

    assert answer is not None and answer.kind is AnswerKind.HEARTBEAT


def test_the_state_change_event_never_carries_the_token() -> None:
    completed = JOB | {"status": "COMPLETED", "updated_at": _at(90), "result": RESULT}
    change = state_change(record(completed, JOB | {"status": "PROCESSING"}), BUCKET)

    assert change is not None
    assert TOKEN not in json.dumps(change.entry("bus"))
