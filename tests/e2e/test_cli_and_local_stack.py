"""End to end, as a user works: the local stack runs in its own process, jobs go in with the
`vary-region` CLI (or plain boto3, like `aws s3 cp`), and everything is observed through S3,
DynamoDB and HTTP. The last test stops the stack with SIGINT, as Ctrl-C does."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from PIL import Image

from tests.e2e.conftest import API_VERSION, REPO_ROOT, Aws, CliRunner, StackProcess, user_env
from tests.support.waits import wait_for_object, wait_until

pytestmark = pytest.mark.e2e

STACK_KEYS = {
    "apiframe_api_version",
    "aws_endpoint_url",
    "region",
    "bucket",
    "table",
    "webhook_url",
    "queue_url",
    "completion_queue_url",
    "apiframe_base_url",
    "simulator",
    "api_key_secret_id",
    "event_bus_name",
    "budget",
}
RESULT_FILES = ["1.png", "2.png", "3.png", "4.png", "grid.png", "mask.png", "parent.png", "result.json"]
IMAGES = ["1.png", "2.png", "3.png", "4.png", "grid.png"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def mask_bytes(
    fmt: str, size: tuple[int, int] = (512, 512), box: tuple[int, int, int, int] = (96, 96, 320, 288)
) -> bytes:
    image = Image.new("L", size, 0)
    image.paste(255, box)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def simulator(local_stack: StackProcess, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    request = urllib.request.Request(
        local_stack.info["apiframe_base_url"] + path,
        method="POST",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


# --- the stack as a user sees it ------------------------------------------------------------------


def test_stack_json_publishes_the_documented_keys(local_stack: StackProcess, aws: Aws) -> None:
    info = local_stack.info
    assert set(info) == STACK_KEYS
    assert info["simulator"] is True
    assert info["apiframe_api_version"] == API_VERSION
    assert info["webhook_url"].startswith("http://127.0.0.1:")
    aws.s3.head_bucket(Bucket=info["bucket"])  # reachable over HTTP with any credentials
    assert aws.table.table_status == "ACTIVE"


def test_rectangle_mask_png_is_a_valid_grayscale_png() -> None:
    from vary_region_cli.masks import Rect, rectangle_mask_png

    data = rectangle_mask_png((300, 200), [Rect(10, 20, 30, 40), Rect(35, 50, 100, 5)])
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every row: a bad CRC, filter byte or length would raise
    assert (image.format, image.mode, image.size) == ("PNG", "L", (300, 200))
    assert set(image.getdata()) == {0, 255}
    assert image.getbbox() == (10, 20, 135, 60)
    assert image.getpixel((10, 20)) == 255 and image.getpixel((39, 59)) == 255
    assert image.getpixel((9, 20)) == 0 and image.getpixel((40, 30)) == 0 and image.getpixel((134, 54)) == 255


# --- submit / watch / get / list / status -----------------------------------------------------------


def test_rect_job_submit_watch_get_list_status(run_cli: CliRunner, aws: Aws, tmp_path: Path) -> None:
    submitted = run_cli(
        "submit",
        "--parent-task-id",
        "e2e-parent-rect",
        "--prompt",
        "a red kite",
        "--rect",
        "100,100,200,150",
        "--size",
        "512,512",
        "--metadata",
        '{"customer": "acme"}',
        script=True,
    )  # the installed console script
    assert_ok(submitted)
    job_id = submitted.stdout.strip()
    assert re.fullmatch(r"job-\d{8}-\d{6}-[0-9a-f]{6}", job_id), submitted.stdout
    mask_object = aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/mask.png")
    assert mask_object["ContentType"] == "image/png"
    mask = Image.open(io.BytesIO(mask_object["Body"].read()))
    assert (mask.mode, mask.size, mask.getbbox()) == ("L", (512, 512), (100, 100, 300, 250))
    spec = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/job.json")["Body"].read())
    assert spec == {"parent_task_id": "e2e-parent-rect", "prompt": "a red kite", "metadata": {"customer": "acme"}}

    watched = run_cli("watch", job_id, "--timeout", "30", "--interval", "0.1")
    assert_ok(watched)
    assert "\r" not in watched.stdout  # not a terminal: one plain line per change
    assert re.search(r"\[#+\] 100%\s+COMPLETED", watched.stdout), watched.stdout
    assert "PROCESSING" in watched.stdout

    got = run_cli("get", job_id, "--out", str(tmp_path / "out"))
    assert_ok(got)
    folder = tmp_path / "out" / job_id
    assert sorted(p.name for p in folder.iterdir()) == RESULT_FILES
    assert sorted(Path(line).name for line in got.stdout.split()) == RESULT_FILES
    for name in IMAGES:
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)
    result = json.loads((folder / "result.json").read_text())
    assert (result["status"], result["prompt"], result["metadata"]) == ("COMPLETED", "a red kite", {"customer": "acme"})

    listed = run_cli("list", "--limit", "50")
    assert_ok(listed)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id + " "))
    assert row.split()[1:3] == ["COMPLETED", "100"]
    assert listed.stdout.splitlines()[0].split()[:3] == ["JOB", "ID", "STATUS"]

    status = run_cli("status", job_id)
    assert_ok(status)
    item = json.loads(status.stdout)
    assert (item["job_id"], item["status"], item["percentage"]) == (job_id, "COMPLETED", 100)
    assert item["task_id"] == result["task_id"] and item["completed_at"]


def test_watch_follows_a_job_by_its_events(run_cli: CliRunner, aws: Aws, local_stack: StackProcess) -> None:
    # The watch subscribes before the job exists: a job that ended before the watch's rule did (the
    # watch's interpreter starting slower than the pipeline runs, on a loaded machine) sends it no event.
    job_id = unique("e2e-events")
    info = local_stack.info
    events = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=info["region"]).client(
        "events", endpoint_url=info["aws_endpoint_url"]
    )
    watching: list[subprocess.CompletedProcess[str]] = []
    watch = threading.Thread(target=lambda: watching.append(run_cli("watch", job_id, "--events", "--timeout", "40")))
    watch.start()
    try:

        def subscribed() -> bool:  # the rule exists and has its target: the watch's last step before it reads
            rules = events.list_rules(NamePrefix="vary-region-watch-", EventBusName=info["event_bus_name"])["Rules"]
            return any(
                events.list_targets_by_rule(Rule=rule["Name"], EventBusName=info["event_bus_name"])["Targets"]
                for rule in rules
            )

        wait_until(subscribed, timeout=30, interval=0.1, message="the watch's subscription")
        submitted = run_cli(
            "submit", "--job-id", job_id, "--parent-task-id", "e2e-parent-events", "--rect", "8,8,64,64",
            "--size", "512,512",
        )  # fmt: skip
        assert_ok(submitted)
    finally:
        watch.join(timeout=70)
    (watched,) = watching

    assert_ok(watched)
    assert "(event)" in watched.stdout and "COMPLETED" in watched.stdout, watched.stdout
    assert watched.stdout.rstrip().endswith(f"(download: vary-region get {job_id})"), watched.stdout
    queues = aws.sqs.list_queues(QueueNamePrefix="vary-region-watch-").get("QueueUrls", [])
    assert queues == [], "the watch removes its queue (and its rule) when it is done"


def test_mask_file_is_uploaded_as_its_real_type(run_cli: CliRunner, aws: Aws, tmp_path: Path) -> None:
    misnamed = tmp_path / "selection.png"  # really a JPEG
    misnamed.write_bytes(mask_bytes("JPEG"))
    job_id = unique("e2e-file")
    submitted = run_cli("submit", "--parent-task-id", "e2e-parent-file", "--mask", str(misnamed), "--job-id", job_id)
    assert_ok(submitted)
    assert submitted.stdout.strip() == job_id
    head = aws.s3.head_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/mask.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert_ok(run_cli("watch", job_id, "--timeout", "30", "--interval", "0.1"))

    again = run_cli("submit", "--parent-task-id", "p", "--mask", str(misnamed), "--job-id", job_id)
    assert again.returncode == 3 and "already used" in again.stderr


def test_inline_job_with_an_unusual_job_id(run_cli: CliRunner, aws: Aws) -> None:
    job_id = unique("e2e inline ü")  # a space and unicode: URL-encoded in the S3 event
    submitted = run_cli(
        "submit",
        "--parent-task-id",
        "e2e-parent-inline",
        "--prompt",
        "a kite",
        "--inline",
        "--rect",
        "10,10,64,64",
        "--size",
        "512x512",
        "--job-id",
        job_id,
    )
    assert_ok(submitted)
    listing = aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"inbox/{job_id}")
    assert [o["Key"] for o in listing["Contents"]] == [f"inbox/{job_id}.json"]
    document = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}.json")["Body"].read())
    assert document["mask"].startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(document["mask"].split(",", 1)[1]))).getbbox() == (10, 10, 74, 74)

    assert_ok(run_cli("watch", job_id, "--timeout", "30", "--interval", "0.1"))
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"results/{job_id}/")["Contents"]]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == RESULT_FILES


def test_plain_boto3_upload_like_aws_s3_cp_completes(run_cli: CliRunner, aws: Aws, tmp_path: Path) -> None:
    job_id = unique("e2e-boto3")
    (tmp_path / "job.json").write_text(json.dumps({"parent_task_id": "e2e-parent-cp", "prompt": "a boat"}))
    (tmp_path / "mask.png").write_bytes(mask_bytes("PNG"))
    # `aws s3 cp job.json s3://bucket/inbox/<id>/job.json`: upload_file, content type from the extension
    aws.s3.upload_file(
        str(tmp_path / "job.json"),
        aws.bucket,
        f"inbox/{job_id}/job.json",
        ExtraArgs={"ContentType": "application/json"},
    )
    aws.s3.upload_file(
        str(tmp_path / "mask.png"), aws.bucket, f"inbox/{job_id}/mask.png", ExtraArgs={"ContentType": "image/png"}
    )
    watched = run_cli("watch", job_id, "--timeout", "30", "--interval", "0.1")
    assert_ok(watched)
    assert "COMPLETED" in watched.stdout


def test_watch_exits_1_with_the_error_code_of_a_rejected_job(run_cli: CliRunner, aws: Aws, tmp_path: Path) -> None:
    job_id = unique("e2e-rejected")
    aws.s3.put_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/job.json", Body=b'{"prompt": "no parent id"}')
    aws.s3.put_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/mask.png", Body=mask_bytes("PNG"))

    watched = run_cli("watch", job_id, "--timeout", "30", "--interval", "0.1")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "REJECTED: PARENT_TASK_ID_MISSING" in watched.stdout

    # The verdict is written before error.json (by design): `watch` can end before the document exists.
    wait_for_object(aws.s3, aws.bucket, f"results/{job_id}/error.json")
    got = run_cli("get", job_id, "--out", str(tmp_path))
    assert_ok(got)
    error = json.loads((tmp_path / job_id / "error.json").read_text())
    assert error["error"]["code"] == "PARENT_TASK_ID_MISSING"
    assert "did not complete" in got.stderr


def test_watch_exits_1_when_the_provider_fails_the_task(run_cli: CliRunner, local_stack: StackProcess) -> None:
    simulator(local_stack, "/_sim/faults", {"fail_task": "the simulated GPU caught fire"})
    try:
        submitted = run_cli("submit", "--parent-task-id", "e2e-parent-fail", "--rect", "0,0,32,32", "--size", "512,512")
        assert_ok(submitted)
        watched = run_cli("watch", submitted.stdout.strip(), "--timeout", "30", "--interval", "0.1")
    finally:
        simulator(local_stack, "/_sim/reset")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "FAILED: PROVIDER_TASK_FAILED: the simulated GPU caught fire" in watched.stdout


def test_watch_times_out_with_exit_code_2(run_cli: CliRunner, aws: Aws) -> None:
    job_id = unique("e2e-waiting")  # job.json without its mask: the job waits for ever
    aws.s3.put_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/job.json", Body=b'{"parent_task_id": "p"}')
    watched = run_cli("watch", job_id, "--timeout", "1", "--interval", "0.2")
    assert watched.returncode == 2, watched.stdout + watched.stderr
    waiting = f"waiting for the mask file inbox/{job_id}/mask.(png|jpg|jpeg|webp)"
    assert "timed out" in watched.stdout and f"still RECEIVED, {waiting}" in watched.stdout
    assert any("RECEIVED" in line and f"({waiting})" in line for line in watched.stdout.splitlines())
    got = run_cli("get", job_id)
    assert got.returncode == 3 and f"has no results yet (status RECEIVED), {waiting}" in got.stderr
    status = run_cli("status", job_id)
    assert_ok(status)
    assert json.loads(status.stdout)["status"] == "RECEIVED" and waiting in status.stderr

    mask_only = unique("e2e-mask-only")  # the other half missing: the mask without its job.json
    aws.s3.put_object(Bucket=aws.bucket, Key=f"inbox/{mask_only}/mask.png", Body=mask_bytes("PNG"))
    watched = run_cli("watch", mask_only, "--timeout", "1", "--interval", "0.2")
    assert watched.returncode == 2, watched.stdout + watched.stderr
    assert f"waiting for the job file inbox/{mask_only}/job.json" in watched.stdout

    unseen = unique("e2e-unseen")  # a file the pipeline ignores: the job never gets an item
    aws.s3.put_object(Bucket=aws.bucket, Key=f"inbox/{unseen}/notes.txt", Body=b"not a job file")
    watched = run_cli("watch", unseen, "--timeout", "1", "--interval", "0.2")
    assert watched.returncode == 2, watched.stdout + watched.stderr
    assert watched.stdout.count("WAITING") == 1 and "not picked up by the pipeline yet" in watched.stdout


# --- configuration and errors ----------------------------------------------------------------------------


def test_the_stack_file_in_the_current_directory_is_used_by_default(
    run_cli: CliRunner, local_stack: StackProcess, tmp_path: Path
) -> None:
    (tmp_path / "project" / ".local").mkdir(parents=True)
    shutil.copy(local_stack.stack_file, tmp_path / "project" / ".local" / "stack.json")
    listed = run_cli("list", local=False, cwd=tmp_path / "project")
    assert_ok(listed)
    assert "JOB ID" in listed.stdout
    explicit = run_cli("--local", "list", "--limit", "1", local=False, cwd=tmp_path / "project")
    assert_ok(explicit)
    after_command = run_cli("list", "--local", "--status", "completed", local=False, cwd=tmp_path / "project")
    assert_ok(after_command)
    assert all("COMPLETED" in line for line in after_command.stdout.splitlines()[1:])


def test_the_stack_file_is_found_from_a_subfolder_as_git_finds_dot_git(
    run_cli: CliRunner, local_stack: StackProcess, tmp_path: Path
) -> None:
    (tmp_path / "project" / ".local").mkdir(parents=True)
    shutil.copy(local_stack.stack_file, tmp_path / "project" / ".local" / "stack.json")
    deep = tmp_path / "project" / "cli" / "vary_region_cli"
    deep.mkdir(parents=True)
    listed = run_cli("list", "--limit", "1", local=False, cwd=deep)
    assert_ok(listed)
    assert "JOB ID" in listed.stdout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = run_cli("--local", "list", local=False, cwd=elsewhere)
    assert missing.returncode == 3
    assert f"no .local/stack.json in {elsewhere.resolve()} or any folder above it" in missing.stderr
    assert "--stack-file" in missing.stderr


@pytest.mark.parametrize(
    ("args", "local", "message"),
    [
        (["submit", "--parent-task-id", "p", "--rect", "1,1,20,20", "--size", "64,64"], False, "no bucket configured"),
        (["list"], False, "no table configured"),
        (["--local", "list"], False, "no local stack"),
        (["status", "no-such-job"], True, "not found"),
        (["get", "no-such-job"], True, "not found"),
        (["watch", "no-such-job", "--timeout", "5"], True, "not found"),
        (["submit", "--parent-task-id", "p", "--rect", "10,10,0,0", "--size", "64,64"], True, "empty"),
        (["submit", "--parent-task-id", "p", "--rect", "60,60,10,10", "--size", "64,64"], True, "does not fit"),
        (["submit", "--parent-task-id", "p", "--polygon", "1,1,9,9"], True, "at least three X,Y points"),
        (["submit", "--parent-task-id", "p", "--mask", "missing.png"], True, "cannot read the mask"),
        (
            ["submit", "--parent-task-id", "p", "--rect", "1,1,9,9", "--size", "64,64", "--metadata", "{"],
            True,
            "not valid JSON",
        ),
        (
            ["submit", "--parent-task-id", "p", "--rect", "1,1,9,9", "--size", "64,64", "--job-id", "a/b"],
            True,
            "invalid job id",
        ),
        (["watch"], True, "JOB_ID"),
    ],
    ids=[
        "no-bucket",
        "no-table",
        "no-stack-file",
        "status-missing",
        "get-missing",
        "watch-missing",
        "empty-rect",
        "rect-outside",
        "polygon-of-two-points",
        "missing-mask-file",
        "bad-metadata",
        "bad-job-id",
        "usage",
    ],
)
def test_errors_are_one_line_and_exit_3(run_cli: CliRunner, args: list[str], local: bool, message: str) -> None:
    result = run_cli(*args, local=local)
    assert result.returncode == 3, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("vary-region")


def test_a_stale_stack_file_gives_a_hint_not_a_traceback(
    run_cli: CliRunner, local_stack: StackProcess, tmp_path: Path
) -> None:
    stale = dict(local_stack.info, aws_endpoint_url="http://127.0.0.1:9")  # discard port: nothing listens
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    result = run_cli("--stack-file", str(tmp_path / "stale.json"), "list", local=False)
    assert result.returncode == 3
    assert "is it running?" in result.stderr and "Traceback" not in result.stderr


# --- make demo, and stopping the stack -------------------------------------------------------------------


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    result = subprocess.run(
        [sys.executable, "-m", "vary_region_local.demo", "--state-dir", str(tmp_path / "state"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO_ROOT,
        env=user_env(tmp_path / "home") | {"APIFRAME_API_VERSION": API_VERSION},  # `APIFRAME_API_VERSION=v2 make demo`
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert f"APIFRAME {API_VERSION} simulator" in result.stdout
    (folder,) = out.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == sorted([*RESULT_FILES, "sheet.png"])
    # The mask the pipeline drew from the demo's fractions 0.35,0.08,0.3,0.5 at the upscale's 512x344.
    mask = Image.open(folder / "mask.png")
    assert (mask.size, mask.getbbox()) == ((512, 344), (179, 28, 333, 200))
    assert Image.open(folder / "parent.png").size == (512, 344)
    sheet = Image.open(folder / "sheet.png")
    assert sheet.height == 384 + 16 and sheet.width > 5 * 384 * 512 / 344
    for stage in ("imagine", "upscale", "inpaint"):
        assert f"stage {stage}" in result.stdout, stage
    assert "sheet.png" in result.stdout
    assert "masked region changed, rest identical" in result.stdout
    assert "Stopped the local stack (exit code 0)." in result.stdout
    assert re.search(r"Demo finished in \d+\.\ds\.", result.stdout)
    assert not (tmp_path / "state" / "stack.json").exists()


def test_demo_refuses_a_running_stack_of_the_other_generation(local_stack: StackProcess, tmp_path: Path) -> None:
    other = "v1" if API_VERSION == "v2" else "v2"
    demo = [sys.executable, "-m", "vary_region_local.demo", "--state-dir", str(local_stack.state_dir)]
    result = subprocess.run(
        [*demo, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
        env=user_env(tmp_path / "home") | {"APIFRAME_API_VERSION": other},
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"a local stack speaking APIFRAME {API_VERSION} is running" in result.stderr
    assert f"APIFRAME_API_VERSION={API_VERSION}" in result.stderr
    assert local_stack.process is not None and local_stack.process.poll() is None, "the user's stack is left running"
    assert not (tmp_path / "out").exists()


def test_stack_stops_cleanly_on_sigint(local_stack: StackProcess) -> None:
    """Last on purpose: it stops the stack the other tests share."""
    assert local_stack.stop() == 0, local_stack.log_tail()
    assert not local_stack.stack_file.exists()
    assert "local stack stopped" in local_stack.log_path.read_text()
