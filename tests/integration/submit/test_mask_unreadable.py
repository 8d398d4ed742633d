"""Given an S3 that denies every read but the job file (a real HTTP server answering S3's own
AccessDenied), when an inline job names its mask in an allowed place the submit function may still
not read (another account's bucket policy, a KMS key), then the job is REJECTED `MASK_UNREADABLE` at
once, not retried for ever; while a denied read of the jobs bucket's own inbox is the stack's fault
and is raised (the message goes back to the queue)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from vary_region.aws.job_files import JobFiles
from vary_region.core.errors import JobRejected
from vary_region.core.keys import InboxObject, parse_inbox_key
from vary_region.settings import MaskSource, Settings
from vary_region.submit.inputs import JobInputs

pytestmark = pytest.mark.generation_blind

DENIED = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


class DenyingS3(BaseHTTPRequestHandler):
    job_files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.job_files.get(self.path.split("?", 1)[0])
        status, content_type = (200, "application/json") if body is not None else (403, "application/xml")
        body = body if body is not None else DENIED
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture()
def s3_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DenyingS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _inputs(endpoint: str) -> JobInputs:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    settings = Settings(jobs_bucket="jobs", jobs_table="jobs", mask_sources=(MaskSource.parse("theirs/masks"),))
    return JobInputs(settings, JobFiles(s3, "jobs"))


def _inline_job() -> InboxObject:
    uploaded = parse_inbox_key("inbox/job-1.json", "inbox/")
    assert uploaded is not None
    return uploaded


def _job_naming(mask: str) -> None:
    body = {"parent_task_id": "p1", "mask": mask}
    DenyingS3.job_files = {"/jobs/inbox/job-1.json": json.dumps(body).encode()}


def test_a_mask_in_an_allowed_place_that_cannot_be_read_is_rejected_unreadable(s3_endpoint: str) -> None:
    _job_naming("s3://theirs/masks/m.png")

    with pytest.raises(Exception) as refused:
        _inputs(s3_endpoint).load(_inline_job())

    assert isinstance(refused.value, JobRejected) and refused.value.error.code == "MASK_UNREADABLE"


def test_a_denied_read_of_the_jobs_own_inbox_is_raised_not_blamed_on_the_job(s3_endpoint: str) -> None:
    _job_naming("s3://jobs/inbox/masks/m.png")

    with pytest.raises(Exception) as raised:
        _inputs(s3_endpoint).load(_inline_job())

    assert isinstance(raised.value, ClientError)
