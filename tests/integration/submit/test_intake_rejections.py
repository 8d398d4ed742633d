"""Given unusable input dropped into inbox/, when the pipeline sees it, then the job is REJECTED with a
specific code (in DynamoDB and in results/<job-id>/error.json), the user's files are left exactly as
uploaded, nothing is written under inbox/, and not a single paid APIFRAME call is made. Files that are
not part of a job are ignored, and a job waits (unsubmitted) until both of its files are present."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest

from tests.support.builders import job_json, mask_image, mask_png, new_job_id, put_files
from tests.support.faults import fail_error_json_write_once
from tests.support.waits import (
    job_ids_in_table,
    job_item,
    keys_under,
    read_error_json,
    read_json,
    settle_stack,
    wait_for_job,
    wait_for_object,
    wait_for_queue_drained,
    wait_until,
)

RESULT_FILES = ["1.png", "2.png", "3.png", "4.png", "grid.png", "result.json"]
EIGHT_MB = 8 * 1024 * 1024


@pytest.fixture(autouse=True)
def _settled(stack, sim):
    """Counts of paid calls below belong to this test alone."""
    settle_stack(stack, sim)


@dataclass(frozen=True)
class BadJob:
    """The files of one bad job, uploaded in this order (job.json last, so the job is whole when it lands).
    Names are relative to inbox/<job-id>/; a name starting with '.' is the inline form inbox/<job-id>.json."""

    code: str
    files: tuple[tuple[str, bytes, str | None], ...]
    says: str = ""  # words the error's message must hold


def _folder(
    spec: bytes, mask: bytes | None = None, *, mask_name: str = "mask.png", mask_type: str | None = None
) -> tuple[tuple[str, bytes, str | None], ...]:
    mask = mask_png() if mask is None else mask
    return ((mask_name, mask, mask_type), ("job.json", spec, "application/json"))


def _inline(document: dict, tail: bytes = b"") -> tuple[tuple[str, bytes, str | None], ...]:
    """`tail`: raw JSON text put in before the closing brace (what json.dumps would not write)."""
    body = json.dumps(document).encode()
    return ((".json", body[:-1] + tail + b"}" if tail else body, "application/json"),)


GOOD_SPEC = job_json()
TRUNCATED_PNG = mask_png()[: len(mask_png()) // 2]
MASK_URL = "data:image/png;base64," + base64.b64encode(mask_png()).decode()
NESTED_100K = b"[" * 100_000 + b"]" * 100_000  # 200 KB, within the job file's 256 KiB

BAD_JOBS = {
    "malformed-json": BadJob("SPEC_INVALID_JSON", _folder(b'{"parent_task_id": "p-1", ')),
    "json-array": BadJob("SPEC_NOT_OBJECT", _folder(b'[{"parent_task_id": "p-1"}]')),
    "empty-job-json": BadJob("SPEC_EMPTY", _folder(b"")),
    "not-utf8": BadJob("SPEC_NOT_UTF8", _folder(b'{"parent_task_id": "p-1", "prompt": "caf\xe9 \xff"}')),
    "no-parent-task-id": BadJob("PARENT_TASK_ID_MISSING", _folder(b'{"prompt": "a red balloon"}')),
    "parent-task-id-not-string": BadJob("PARENT_TASK_ID_INVALID", _folder(job_json(parent_task_id=123))),
    "prompt-10k-chars": BadJob("PROMPT_TOO_LONG", _folder(job_json(prompt="x" * 10_000))),
    "prompt-control-char": BadJob("PROMPT_CONTROL_CHARACTERS", _folder(job_json(prompt="a red \x07 balloon"))),
    "metadata-not-object": BadJob("METADATA_INVALID", _folder(job_json(metadata=["customer", "acme"]))),
    "empty-mask": BadJob("MASK_EMPTY", _folder(GOOD_SPEC, b"")),
    "truncated-png": BadJob("MASK_TRUNCATED", _folder(GOOD_SPEC, TRUNCATED_PNG)),
    "text-named-mask-png": BadJob("MASK_NOT_IMAGE", _folder(GOOD_SPEC, b"this is not an image\n", mask_type=None)),
    "mask-over-8mb": BadJob("MASK_TOO_LARGE", _folder(GOOD_SPEC, b"\x89PNG\r\n\x1a\n" + b"\0" * EIGHT_MB)),
    "png-named-mask-jpg": BadJob("MASK_TYPE_MISMATCH", _folder(GOOD_SPEC, mask_png(), mask_name="mask.jpg")),
    "png-uploaded-as-jpeg": BadJob("MASK_TYPE_MISMATCH", _folder(GOOD_SPEC, mask_png(), mask_type="image/jpeg")),
    "all-black-mask": BadJob("MASK_BLANK", _folder(GOOD_SPEC, mask_png(box=None))),
    "two-masks": BadJob(
        "MASK_AMBIGUOUS",
        (
            ("mask.png", mask_png(), "image/png"),
            ("mask.jpg", mask_image("JPEG"), "image/jpeg"),
            ("job.json", GOOD_SPEC, "application/json"),
        ),
    ),
    "inline-without-mask": BadJob("MASK_MISSING", _inline({"parent_task_id": "p-inline", "prompt": "a kite"})),
    # Not JSON as RFC 8259 has it: every event and document of the job would be invalid JSON too.
    "metadata-nan": BadJob(
        "SPEC_INVALID_JSON", _folder(b'{"parent_task_id": "p-1", "metadata": {"score": NaN}}'), "NaN"
    ),
    "inline-infinity": BadJob(
        "SPEC_INVALID_JSON",
        _inline({"parent_task_id": "p-1", "mask": MASK_URL}, b', "metadata": {"x": -Infinity}'),
        "-Infinity",
    ),
    # Nesting the parser would recurse into until the interpreter gives up.
    "deeply-nested": BadJob(
        "SPEC_INVALID_JSON", _folder(b'{"parent_task_id": "p-1", "metadata": ' + NESTED_100K + b"}"), "100001 levels"
    ),
    "inline-deeply-nested": BadJob(
        "SPEC_INVALID_JSON",
        _inline({"parent_task_id": "p-1", "mask": MASK_URL}, b', "metadata": ' + NESTED_100K),
        "100001 levels",
    ),
    # A misspelt optional key would be a paid job without it.
    "typo-promt": BadJob(
        "SPEC_UNKNOWN_KEY", _folder(job_json(prompt=None, promt="a red balloon")), "did you mean 'prompt'?"
    ),
    "inline-typo-mask-fit": BadJob(
        "SPEC_UNKNOWN_KEY",
        _inline({"parent_task_id": "p-1", "mask": MASK_URL, "mask_fitt": "resize"}),
        "did you mean 'mask_fit'?",
    ),
    "inline-broken-data-url": BadJob(
        "MASK_DATA_URL_INVALID",
        _inline({"parent_task_id": "p-inline", "mask": "data:image/png;base64,iVBORw0KGgo!!not*base64"}),
    ),
}


def _key(job_id: str, name: str) -> str:
    return f"inbox/{job_id}{name}" if name.startswith(".") else f"inbox/{job_id}/{name}"


@pytest.mark.parametrize("case", list(BAD_JOBS.values()), ids=list(BAD_JOBS))
def test_given_bad_input_when_uploaded_then_job_rejected_with_code_and_nothing_is_spent(
    stack, sim, s3, table, bucket, case
):
    job_id = new_job_id("bad")
    files = [(_key(job_id, name), body, content_type) for name, body, content_type in case.files]

    etags = put_files(s3, bucket, files)
    item = wait_for_job(table, job_id, timeout=15)

    assert item["status"] == "REJECTED", item
    assert item["error"]["code"] == case.code
    assert item["error"]["stage"] == "intake"
    assert item["error"]["message"] and case.says in item["error"]["message"]
    error_doc = json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json"))
    assert error_doc == {"job_id": job_id, "status": "REJECTED", "error": dict(item["error"])}
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/error.json"]
    # Every event of the job has been handled: the verdict is final, not a snapshot.
    wait_for_queue_drained(stack)
    assert job_item(table, job_id)["status"] == "REJECTED"
    assert sim.stats()["inpaint_calls"] == 0
    # The user's files: exactly the ones uploaded, byte for byte, and nothing new under inbox/.
    assert keys_under(s3, bucket, f"inbox/{job_id}") == sorted(key for key, _, _ in files)
    for key, body, _ in files:
        stored = s3.get_object(Bucket=bucket, Key=key)
        assert stored["ETag"] == etags[key]
        assert stored["Body"].read() == body


@pytest.mark.parametrize(
    "prefix",
    ["my job ü 1", "a+b", "100% done", "x&y=z;(1)", "ballon 🎈 ~'!"],
    ids=["space-unicode", "plus", "percent", "query-chars", "emoji-punctuation"],
)
def test_given_job_id_with_spaces_and_unicode_when_uploaded_then_it_completes_under_the_decoded_id(
    stack, sim, s3, table, bucket, prefix
):
    job_id = new_job_id(prefix)
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/job.json", job_json(), "application/json"),
            (f"inbox/{job_id}/mask.png", mask_png(), "image/png"),
        ],
    )

    item = wait_for_job(table, job_id)

    assert item["status"] == "COMPLETED", item
    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/{name}" for name in RESULT_FILES]
    assert read_json(s3, bucket, f"results/{job_id}/result.json")["job_id"] == job_id
    assert sim.stats()["inpaint_calls"] == 1


@pytest.mark.parametrize(
    "key", ["inbox/readme.txt", "inbox/a/b/c.json", "inbox/notes-{uid}/photo.png", "inbox/{uid}/job.json.bak"]
)
def test_given_file_that_is_no_part_of_a_job_when_uploaded_then_it_is_ignored(stack, sim, s3, table, bucket, key):
    uid = new_job_id("stray")
    key = key.format(uid=uid)
    before_jobs = job_ids_in_table(table)
    before_results = keys_under(s3, bucket, "results/")

    put_files(s3, bucket, [(key, b'{"parent_task_id": "p-1"}', None)])
    wait_for_queue_drained(stack)

    assert job_ids_in_table(table) == before_jobs
    assert keys_under(s3, bucket, "results/") == before_results
    assert sim.stats()["inpaint_calls"] == 0
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"parent_task_id": "p-1"}'


def test_given_job_json_without_mask_then_job_waits_unsubmitted_until_the_mask_arrives(stack, sim, s3, table, bucket):
    job_id = new_job_id("waiting")
    put_files(s3, bucket, [(f"inbox/{job_id}/job.json", job_json(), "application/json")])
    wait_for_job(table, job_id, ("RECEIVED",))
    wait_for_queue_drained(stack)

    item = job_item(table, job_id)
    assert item["status"] == "RECEIVED"
    assert "task_id" not in item and "submit_claim" not in item
    assert sim.stats()["inpaint_calls"] == 0
    assert keys_under(s3, bucket, f"results/{job_id}/") == []

    put_files(s3, bucket, [(f"inbox/{job_id}/mask.png", mask_png(), "image/png")])
    item = wait_for_job(table, job_id)

    assert item["status"] == "COMPLETED", item
    assert sim.stats()["inpaint_calls"] == 1


def test_given_inline_job_with_valid_data_url_and_prompt_with_newline_then_it_completes(stack, sim, s3, table, bucket):
    """Control case for the inline rejections above: the same shape with a good mask is accepted, and a
    line break in the prompt (a typing accident, not a control character) is folded, not rejected."""
    job_id = new_job_id("inline-ok")
    document = {
        "parent_task_id": "p-inline-ok",
        "prompt": "a red\nkite",
        "mask": "data:image/png;base64," + base64.b64encode(mask_png()).decode(),
    }
    put_files(s3, bucket, [(f"inbox/{job_id}.json", json.dumps(document).encode(), "application/json")])

    item = wait_for_job(table, job_id)

    assert item["status"] == "COMPLETED", item
    assert sim.inpaint_requests[-1]["prompt"] == "a red kite"


def test_given_error_json_write_fails_once_when_event_is_redelivered_then_error_json_still_appears(
    stack, sim, s3, table, bucket, monkeypatch
):
    """The verdict is recorded first and error.json second: if that write fails, the invocation fails, SQS
    brings the message back, and the redelivery (which finds the job final) must still write error.json."""
    job_id = new_job_id("crash")
    failures = fail_error_json_write_once(stack, job_id, monkeypatch)
    put_files(
        s3,
        bucket,
        [
            (f"inbox/{job_id}/mask.png", mask_png(box=None), "image/png"),
            (f"inbox/{job_id}/job.json", job_json(), "application/json"),
        ],
    )
    assert wait_for_job(table, job_id)["status"] == "REJECTED"
    wait_until(lambda: failures, 10, message="the failed error.json write")
    wait_for_queue_drained(stack)  # the failed message came back (after ~2 s) and was handled again

    assert keys_under(s3, bucket, f"results/{job_id}/") == [f"results/{job_id}/error.json"]
    item = job_item(table, job_id)
    assert item["error"]["code"] == "MASK_BLANK"
    assert read_error_json(s3, bucket, job_id) == {
        "job_id": job_id,
        "status": "REJECTED",
        "error": dict(item["error"]),
    }
