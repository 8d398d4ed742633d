"""The CLI's commands without AWS: usage and help texts, what `watch` and `status` print, and the
mask checks `submit` makes before it uploads anything."""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from vary_region_cli import jobs
from vary_region_cli import main as cli
from vary_region_cli.config import Target
from vary_region_cli.masks import MaskError, check_mask_file

AWS = ["--bucket", "jobs-bucket", "--table", "jobs-table", "--region", "us-east-1"]


def png(size: tuple[int, int] = (64, 64), white: tuple[int, int, int, int] | None = None, mode: str = "L") -> bytes:
    image = Image.new(mode, size, 0)
    if white:
        image.paste(255 if mode == "L" else (255,) * len(mode), white)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class FakeS3:
    """list_objects_v2 over a fixed set of keys; put_object must never be reached in these tests."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.listings = 0

    def list_objects_v2(self, Bucket: str, Prefix: str, MaxKeys: int = 1000) -> dict[str, Any]:
        self.listings += 1
        return {"Contents": [{"Key": k} for k in self.keys if k.startswith(Prefix)][:MaxKeys]}

    def put_object(self, **kwargs: Any) -> None:
        raise AssertionError(f"uploaded {kwargs.get('Key')}")


def fake_target(keys: list[str] | None = None) -> Target:
    target = Target(
        bucket="jobs-bucket", table="jobs-table", endpoint_url=None, region="us-east-1", profile=None, local=False
    )
    target.__dict__["s3"] = FakeS3(keys or [])  # in place of the cached boto3 client
    return target


# --- usage and help ------------------------------------------------------------------------------


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_a_summary() -> None:
    summary = cli.build_parser().format_help()
    for name, sub in subcommands().items():
        assert sub.description and len(sub.description) > 20, name
        # in `vary-region NAME --help` (compared without whitespace: the text is re-wrapped there)
        assert "".join(sub.description.split()) in "".join(sub.format_help().split()), name
        assert name in summary


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["status", "--bogus", "job-1"], "status"),
        (["get", "job-1", "--nope"], "get"),
        (["list", "extra"], "list"),
        (["watch", "job-1", "--interval"], "watch"),
        (["submit", "--parent-task-id", "p"], "submit"),
    ],
)
def test_an_argument_error_shows_the_usage_of_its_subcommand(
    argv: list[str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert error.startswith(f"usage: vary-region {command} ")
    assert f"vary-region {command}: error: " in error
    assert "COMMAND ..." not in error  # not the top-level usage


# --- watch ---------------------------------------------------------------------------------------


def test_the_download_hint_is_a_command_that_can_be_copied(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = "my job's id; rm -rf ~"
    item = {"job_id": job_id, "status": "COMPLETED", "result": {"images": {"1": {}, "2": {}}}}
    monkeypatch.setattr(jobs, "watch_job", lambda *a, **k: jobs.WatchResult("COMPLETED", item, 1.0))
    assert cli.main(["watch", job_id, *AWS]) == cli.EXIT_OK
    out = capsys.readouterr().out
    hint = out.split("(download: ", 1)[1].rsplit(")", 1)[0]
    assert shlex.split(hint) == ["vary-region", "get", job_id]


def test_a_timeout_says_which_file_a_received_job_waits_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    waiting = "waiting for the mask file inbox/job-1/mask.(png|jpg|jpeg|webp)"
    result = jobs.WatchResult("TIMEOUT", {"job_id": "job-1", "status": "RECEIVED"}, 5.0, waiting)
    monkeypatch.setattr(jobs, "watch_job", lambda *a, **k: result)
    assert cli.main(["watch", "job-1", "--timeout", "5", *AWS]) == cli.EXIT_TIMEOUT
    assert f"timed out after 5s: job job-1 is still RECEIVED, {waiting}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        # job.json alone may be a whole job (regions): only the pipeline, which read it, says otherwise.
        (["inbox/job-1/job.json"], None),
        (["inbox/job-1/mask.JPEG"], "waiting for the job file inbox/job-1/job.json"),
        (["inbox/job-1/mask.webp", "inbox/job-1/notes.txt"], "waiting for the job file inbox/job-1/job.json"),
        (["inbox/job-1/job.json", "inbox/job-1/mask.png"], None),  # both there: the pipeline has it
        (["inbox/job-1.json"], None),  # an inline job waits for nothing
        (["inbox/job-10/job.json", "inbox/job-1/mask.png"], "waiting for the job file inbox/job-1/job.json"),
    ],
    ids=["spec-only", "mask-only", "mask-and-stray-file", "both", "inline", "other-job's-mask"],
)
def test_waiting_for_names_the_missing_file(keys: list[str], expected: str | None) -> None:
    assert jobs.waiting_for(fake_target(keys), "job-1", {"status": "RECEIVED"}) == expected


def test_waiting_for_is_the_pipelines_word_when_it_said_one() -> None:
    target = fake_target(["inbox/job-1/job.json"])
    said = "waiting for the mask file inbox/job-1/mask.(png|jpg|jpeg|webp)"
    assert jobs.waiting_for(target, "job-1", {"status": "RECEIVED", "waiting_for": said}) == said
    assert jobs.waiting_for(target, "job-1", {"status": "RECEIVED", "submit_claim": "c"}) is None
    assert target.s3.listings == 0


def test_waiting_for_only_looks_at_received_jobs() -> None:
    target = fake_target(["inbox/job-1/job.json"])
    for item in (None, {"status": "SUBMITTED"}, {"status": "COMPLETED"}):
        assert jobs.waiting_for(target, "job-1", item) is None
    assert target.s3.listings == 0


def test_watch_lists_the_inbox_once_per_change_not_once_per_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    target = fake_target(["inbox/job-1/mask.png"])
    monkeypatch.setattr(jobs, "get_item", lambda *a: {"job_id": "job-1", "status": "RECEIVED"})
    now = iter(float(i) for i in range(100))
    out = io.StringIO()
    result = jobs.watch_job(
        target, "job-1", timeout=5, interval=1, out=out, clock=lambda: next(now), sleep=lambda s: None
    )
    assert result.status == "TIMEOUT"
    assert result.waiting_for == "waiting for the job file inbox/job-1/job.json"
    (line,) = out.getvalue().splitlines()  # not a terminal: one line per change
    assert "RECEIVED" in line and f"({result.waiting_for})" in line
    assert target.s3.listings == 2  # the first sight of RECEIVED, and once more at the timeout


# --- status --------------------------------------------------------------------------------------

ITEM = {
    "job_id": "job-1",
    "status": "COMPLETED",
    "percentage": 100,
    "task_id": "task-1",
    "created_at": "2026-11-26T12:00:00.000Z",
    "completed_at": "2026-11-26T12:00:03.000Z",
    "result": {"images": {}},
    "submit_claim": "claim-token",
    "submit_claimed_at": "2026-11-26T12:00:01.000Z",
    "webhook_secret_hash": "sha256:abc",
    "holds_slot": True,
    "copy_lease": "lease-1",
    "copy_lease_until": "2026-11-26T12:01:00.000Z",
    "active": "3",
    "created_day": "2026-11-26",
    "expires_at": 1790000000,
}
BOOKKEEPING = {
    "submit_claim",
    "submit_claimed_at",
    "webhook_secret_hash",
    "holds_slot",
    "copy_lease",
    "copy_lease_until",
    "active",
    "created_day",
    "expires_at",
}


def test_status_hides_the_pipelines_bookkeeping_unless_raw(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(jobs, "require_item", lambda *a: dict(ITEM))
    monkeypatch.setattr(jobs, "waiting_for", lambda *a: None)
    assert cli.main(["status", "job-1", *AWS]) == cli.EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown == {k: v for k, v in ITEM.items() if k not in BOOKKEEPING}
    assert cli.main(["status", "job-1", "--raw", *AWS]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out) == ITEM


def test_status_of_a_job_missing_a_file_says_so_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = fake_target(["inbox/job-1/mask.png"])
    monkeypatch.setattr(cli, "resolve", lambda settings: target)
    monkeypatch.setattr(jobs, "require_item", lambda *a: {"job_id": "job-1", "status": "RECEIVED"})
    assert cli.main(["status", "job-1"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "RECEIVED"  # stdout stays plain JSON
    assert "job job-1 is RECEIVED: waiting for the job file inbox/job-1/job.json" in captured.err


# --- held jobs -----------------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 16, 15, 3, tzinfo=UTC)
HELD = {
    "job_id": "job-1",
    "status": "RECEIVED",
    "held_at": "2026-12-01T16:15:03.120Z",
    "held_reason": "BUDGET_EXCEEDED",
    "held_until": "2026-12-02T00:00:00.000Z",
    "credits_needed": 10,
}
BUDGET_WORDS = "held: the daily or monthly credit limit has no room left for its chain (BUDGET_EXCEEDED)"


@pytest.mark.parametrize(
    ("held_until", "period"),
    [("2026-12-02T00:00:00.000Z", "day"), ("2027-01-01T00:00:00.000Z", "month")],
)
def test_a_job_held_for_the_budget_says_why_and_until_the_next_period(held_until: str, period: str) -> None:
    note = jobs.held_note(HELD | {"held_until": held_until}, NOW)
    assert note == (
        f"{BUDGET_WORDS}; until {held_until[:19]}Z, when the next UTC {period}'s budget opens "
        "(sooner if credits are given back)"
    )


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("PROVIDER_SLOTS_FULL", "every provider slot is taken"),
        ("PROVIDER_UNAVAILABLE", "APIFRAME did not take the request for now"),
        ("PARENT_RUNNING", "its parent task is still running"),
        ("PARENT_UNAVAILABLE", "its parent task or image cannot be read for now"),
        ("PROVIDER_BALANCE_LOW", "the APIFRAME account's credits cannot cover its chain"),
    ],
)
def test_every_other_hold_says_why_and_about_when_it_is_tried_again(reason: str, words: str) -> None:
    item = HELD | {"held_reason": reason, "held_until": "2026-12-01T16:15:33.120Z"}
    note = jobs.held_note(item, NOW) or ""
    assert note.startswith(f"held: {words}") and f"({reason}); next try about 2026-12-01T16:15:33Z" in note
    # Later wake-ups of a job held for a slot write nothing: past its first retry it says so, not a stale time.
    later = jobs.held_note(item, NOW + timedelta(minutes=5)) or ""
    assert later.endswith(f"({reason}); tried again regularly since 2026-12-01T16:15:33Z")


def test_only_an_open_held_job_has_a_hold_to_tell() -> None:
    assert jobs.held_note(None, NOW) is None
    assert jobs.held_note({"status": "RECEIVED"}, NOW) is None
    assert jobs.held_note(HELD | {"status": "COMPLETED"}, NOW) is None
    # A job that lost a file waits for it, whatever hold it had before: that is what it needs.
    assert jobs.held_note(HELD | {"waiting_for": "waiting for the job file inbox/job-1/job.json"}, NOW) is None
    assert jobs.held_note(HELD | {"held_reason": None, "held_until": None}, NOW) == "held back in the queue"
    # A chain between stages is held too (PROCESSING, its next stage unclaimed).
    assert (jobs.held_note(HELD | {"status": "PROCESSING", "held_reason": "PARENT_RUNNING"}, NOW) or "").startswith(
        "held: its parent task is still running"
    )


def test_status_of_a_held_job_says_why_and_until_when_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    held = HELD | {"held_until": "2999-12-02T00:00:00.000Z"}  # ahead of the real clock the command reads
    monkeypatch.setattr(jobs, "require_item", lambda *a: dict(held))
    assert cli.main(["status", "job-1", *AWS]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["held_until"] == "2999-12-02T00:00:00.000Z"  # stdout stays the item's JSON
    assert f"job job-1 is RECEIVED: {BUDGET_WORDS}; until 2999-12-02T00:00:00Z, when the next UTC day's" in captured.err


def test_watch_shows_a_held_job_and_a_new_line_when_its_hold_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    slots = HELD | {"held_reason": "PROVIDER_SLOTS_FULL", "held_until": "2999-01-01T00:00:31.000Z"}
    budget = HELD | {"held_until": "2999-12-02T00:00:00.000Z"}
    items = iter([slots, slots, budget, budget, budget])
    monkeypatch.setattr(jobs, "get_item", lambda *a: next(items))
    now = iter(float(i) for i in range(100))
    out = io.StringIO()
    result = jobs.watch_job(
        fake_target(), "job-1", timeout=4, interval=1, out=out, clock=lambda: next(now), sleep=lambda s: None
    )
    assert result.status == "TIMEOUT"
    first, second = out.getvalue().splitlines()
    assert "RECEIVED" in first and "(held: every provider slot is taken" in first
    assert "next try about 2999-01-01T00:00:31Z" in first
    assert f"({BUDGET_WORDS}; until 2999-12-02T00:00:00Z" in second


def test_watch_on_a_terminal_prints_the_whole_hold_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    held = HELD | {"held_until": "2999-12-02T00:00:00.000Z"}
    monkeypatch.setattr(jobs, "get_item", lambda *a: dict(held))
    monkeypatch.setattr(jobs.shutil, "get_terminal_size", lambda fallback: os.terminal_size((80, 24)))
    now = iter(float(i) for i in range(100))
    out = Terminal()
    jobs.watch_job(
        fake_target(), "job-1", timeout=3, interval=1, out=out, clock=lambda: next(now), sleep=lambda s: None
    )
    whole = [line.strip("\r ") for line in out.getvalue().split("\n") if BUDGET_WORDS in line]
    assert len(whole) == 1 and whole[0].startswith(BUDGET_WORDS) and "until 2999-12-02T00:00:00Z" in whole[0]


def test_a_watch_timeout_of_a_held_job_says_why_it_waits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    held = HELD | {"held_until": "2999-12-02T00:00:00.000Z"}
    monkeypatch.setattr(jobs, "watch_job", lambda *a, **k: jobs.WatchResult("TIMEOUT", held, 5.0))
    assert cli.main(["watch", "job-1", "--timeout", "5", *AWS]) == cli.EXIT_TIMEOUT
    assert (
        f"timed out after 5s: job job-1 is still RECEIVED, {BUDGET_WORDS}; until 2999-12-02T00:00:00Z"
        in capsys.readouterr().out
    )


def test_watch_by_events_shows_the_hold_an_event_carries() -> None:
    detail = {
        "job_id": "job-1",
        "status": "RECEIVED",
        "sequence": "100",
        "updated_at": "2026-12-01T16:15:03.120Z",
        "held_reason": "BUDGET_EXCEEDED",
        "held_until": "2999-12-02T00:00:00.000Z",
    }
    line = jobs.status_line(jobs._as_item(detail), 1.0, now=NOW)
    assert f"({BUDGET_WORDS}; until 2999-12-02T00:00:00Z" in line


# --- masks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (png(), "MASK_BLANK"),
        (png(mode="RGBA"), "MASK_BLANK"),
        (png(size=(8, 8), white=(0, 0, 4, 4)), "MASK_DIMENSIONS_INVALID"),
        (png(white=(1, 1, 5, 5))[:-20], "MASK_TRUNCATED"),
        (b"GIF89a....", "MASK_NOT_IMAGE"),
        (b"", "MASK_EMPTY"),
    ],
    ids=["black", "transparent-black", "too-small", "truncated", "not-an-image", "empty"],
)
def test_a_mask_the_pipeline_would_reject_is_refused_before_upload(data: bytes, code: str) -> None:
    with pytest.raises(MaskError) as raised:
        check_mask_file(data, "sel.png")
    assert str(raised.value).startswith("sel.png: ") and f"reject the job as {code}" in str(raised.value)


def test_a_mask_with_one_white_pixel_is_accepted() -> None:
    assert check_mask_file(png(white=(10, 10, 11, 11)), "sel.png") == "image/png"


def test_submit_refuses_an_all_black_mask_file_and_uploads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "black.png").write_bytes(png())
    target = fake_target()
    monkeypatch.setattr(cli, "resolve", lambda settings: target)
    code = cli.main(["submit", "--parent-task-id", "p", "--mask", str(tmp_path / "black.png")])
    assert code == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert "the mask selects nothing" in error and "MASK_BLANK" in error and "white marks the region" in error
    assert target.s3.listings == 0  # refused before even looking at the bucket


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--rect", "0.3,0.1,0.4,0.5"], ["MASK_REGIONS_TOO_SMALL", "--units fraction"]),
        (["--ellipse", "0.5,0.5,0.2,0.1", "--units", "px"], ["MASK_REGIONS_TOO_SMALL", "--units fraction"]),
        (["--rect", "0.3,0.1,0.01,0.05", "--units", "fraction"], ["MASK_REGIONS_TOO_SMALL", "0.050%"]),
        (["--rect", "0.8,0.1,0.4,0.5", "--units", "fraction"], ["MASK_REGIONS_INVALID", "outside"]),
        (["--rect", "100,100,200,200", "--metadata", '{"score": NaN}'], ["--metadata is not valid JSON", "NaN"]),
    ],
    ids=["fractions-as-pixels", "explicit-px", "fraction-too-small", "fraction-outside", "metadata-nan"],
)
def test_submit_refuses_what_the_pipeline_would_reject_and_uploads_nothing(
    argv: list[str], words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = fake_target()
    monkeypatch.setattr(cli, "resolve", lambda settings: target)

    code = cli.main(["submit", "--parent-task-id", "p", *argv])

    assert code == cli.EXIT_ERROR
    error = capsys.readouterr().err
    assert all(word in error for word in words), error
    assert target.s3.listings == 0  # refused before even looking at the bucket


def test_submit_with_units_fraction_sends_the_regions_in_fractions(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _sent_documents(monkeypatch)

    assert cli.main(["submit", "--parent-task-id", "p", "--rect", "0.3,0.1,0.4,0.5", "--units", "fraction"]) == 0

    assert sent[0]["mask"] == {"regions": [{"rect": [0.3, 0.1, 0.4, 0.5]}], "units": "fraction"}


# --- the pipeline's rules, read from the layer's core rather than copied ---------------------------

ID_CASES = ["job-1", "my job", "日本", "a%41", "x" * 200, "", ".", "..", "a/b", "/provider-slots", "a\nb", "x" * 201]


@pytest.mark.parametrize("job_id", ID_CASES)
def test_the_cli_refuses_exactly_the_job_ids_the_pipeline_ignores(job_id: str) -> None:
    from vary_region.core.keys import is_valid_job_id, parse_inbox_key

    accepted = parse_inbox_key(f"inbox/{job_id}/job.json") is not None
    assert is_valid_job_id(job_id) is accepted
    if accepted:
        assert jobs.check_job_id(job_id) == job_id
    else:
        with pytest.raises(cli.CliError, match="invalid job id"):
            jobs.check_job_id(job_id)


def test_the_cli_waits_for_exactly_the_pipelines_final_statuses() -> None:
    from vary_region.core.job import JobStatus

    assert {status.value for status in JobStatus if status.is_final} == set(jobs.FINAL)
    assert "RUNNING" not in jobs.FINAL


def test_an_items_numbers_sets_and_bytes_are_printed_as_json() -> None:
    from decimal import Decimal

    item = {"percentage": Decimal("40"), "ratio": Decimal("0.5"), "tags": {"a"}, "blob": b"x", "nested": [Decimal(2)]}
    assert json.loads(json.dumps(jobs.plain(item))) == {
        "percentage": 40,
        "ratio": 0.5,
        "tags": ["a"],
        "blob": "x",
        "nested": [2],
    }


# --- the CLI says everything a job file can (issue #28, item 5) ------------------------------------


def exit_code(argv: list[str]) -> int:
    """main's exit code, also when argparse ends the program itself (a refused option, with the usage)."""
    try:
        return cli.main(argv)
    except SystemExit as exited:
        return int(exited.code or 0)


def _sent_documents(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "resolve", lambda settings: fake_target())

    def recording_submit(target: Target, job_id: str, document: dict[str, Any], *a: Any, **k: Any) -> list[jobs.Upload]:
        sent.append(document)
        return []

    monkeypatch.setattr(cli.jobs, "submit_job", recording_submit)
    return sent


def test_submit_mixes_shapes_of_every_kind_in_one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _sent_documents(monkeypatch)
    argv = ["--rect", "0.1,0.1,0.2,0.2", "--ellipse", "0.6,0.3,0.1,0.15", "--rect", "0.5,0.6,0.3,0.2"]
    argv += ["--polygon", "0.1,0.9,0.3,0.6,0.4,0.95", "--units", "fraction"]

    assert exit_code(["submit", "--parent-task-id", "p", *argv]) == 0

    assert sent[0]["mask"] == {
        "regions": [
            {"rect": [0.1, 0.1, 0.2, 0.2]},
            {"rect": [0.5, 0.6, 0.3, 0.2]},
            {"ellipse": [0.6, 0.3, 0.1, 0.15]},
            {"polygon": [[0.1, 0.9], [0.3, 0.6], [0.4, 0.95]]},
        ],
        "units": "fraction",
    }


def test_submit_mask_fit_resize_is_written_into_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "small.png").write_bytes(png(white=(10, 10, 30, 30)))
    sent = _sent_documents(monkeypatch)

    argv = ["submit", "--parent-task-id", "p", "--mask", str(tmp_path / "small.png"), "--mask-fit", "resize"]
    assert cli.main(argv) == 0

    assert sent[0] == {"parent_task_id": "p", "mask_fit": "resize"}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--mask", "m.png", "--rect", "1,1,20,20"], "argument --mask: not allowed with --rect"),
        ([], "one of the arguments --mask --rect --ellipse --polygon is required"),
        (["--rect", "1,1,20,20", "--ellipse", "30,30,5,5", "--size", "64,64"], "--size draws rectangles only"),
        (["--ellipse", "300,300,50,50", "--mask-fit", "resize"], "--mask-fit is about a mask file"),
        (["--rect", "1,1,20,20", "--mask-fit", "stretch"], "invalid choice: 'stretch'"),
    ],
    ids=["mask-and-shapes", "no-region", "size-with-ellipse", "fit-with-shapes", "fit-unknown"],
)
def test_submit_region_options_that_do_not_go_together(
    argv: list[str], words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = fake_target()
    monkeypatch.setattr(cli, "resolve", lambda settings: target)
    assert exit_code(["submit", "--parent-task-id", "p", *argv]) == cli.EXIT_ERROR
    assert words in capsys.readouterr().err
    assert target.s3.listings == 0
