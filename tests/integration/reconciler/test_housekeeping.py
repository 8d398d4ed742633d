"""The reconciler keeps every open job moving: held jobs wait without being rejected, forgotten tasks
time out and give their provider slot back; uploads are deferred when an invocation runs short of
time; gzip-encoded images still copy."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from vary_region.aws.job_files import JobFiles
from vary_region.completion.image_copier import ImageCopier
from vary_region.core.errors import ErrorStage, JobError
from vary_region.core.stages import JobStage
from vary_region.reconciler.reconciler import Reconciler
from vary_region.settings import ImageOrigin
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.wiring import job_endings

from tests.support.builders import mask_png, new_job_id, upload_job
from tests.support.waits import get_job, job_item, settle_stack, wait_for_status


def reconciler_at(stack: Any, moment: datetime) -> tuple[Reconciler, JobTable]:
    """The deployed reconciler's parts, with a clock set to `moment`."""
    module = stack.functions["reconciler"].module
    settings = module.settings
    store = JobTable(boto3.resource("dynamodb").Table(settings.jobs_table), max_active_tasks=1000)
    live = module.reconciler
    ends = job_endings(settings, store, JobFiles(boto3.client("s3"), settings.jobs_bucket), clock=lambda: moment)
    return Reconciler(settings, store, ends, live._apiframe, live._queue, clock=lambda: moment), store


def test_a_held_job_is_not_rejected_as_incomplete_while_an_abandoned_one_is(stack, sim, table):
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    reconciler, store = reconciler_at(stack, datetime.now(UTC))
    held, abandoned = new_job_id("held"), new_job_id("abandoned")
    for job_id in (held, abandoned):
        store.record_received(job_id, two_days_ago)
    store.mark_held(held, two_days_ago)

    reconciler.run()

    assert job_item(table, held)["status"] == "RECEIVED"
    assert job_item(table, abandoned)["status"] == "REJECTED"
    assert job_item(table, abandoned)["error"]["code"] == "JOB_INCOMPLETE"
    assert job_item(table, held)["updated_at"] > job_item(table, held)["held_at"], "looked at: back of the line"
    store.mark_rejected(held, JobError("TEST_CLEANUP", "test", ErrorStage.INTAKE), datetime.now(UTC))


def test_a_task_the_provider_forgot_times_out_and_gives_its_slot_back(stack, sim, table):
    seven_hours_ago = datetime.now(UTC) - timedelta(hours=7)
    reconciler, store = reconciler_at(stack, datetime.now(UTC))
    slots_before = store.slots_in_use()
    job_id = new_job_id("forgotten")
    store.record_received(job_id, seven_hours_ago)
    assert store.claim_submission(job_id, "tok", "hash", "parent", None, {}, seven_hours_ago)
    assert store.mark_submitted(job_id, "tok", "ghost-task-never-created", seven_hours_ago)
    assert store.slots_in_use() == slots_before + 1

    reconciler.run()

    item = wait_for_status(table, job_id, ("FAILED",))
    assert item["error"]["code"] == "TASK_TIMED_OUT"
    assert store.slots_in_use() == slots_before


def test_a_running_task_younger_than_the_limit_is_left_alone(stack, sim, table):
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    reconciler, store = reconciler_at(stack, datetime.now(UTC))
    job_id = new_job_id("young")
    store.record_received(job_id, an_hour_ago)
    assert store.claim_submission(job_id, "tok", "hash", "parent", None, {}, an_hour_ago)
    assert store.mark_submitted(job_id, "tok", "ghost-task-young", an_hour_ago)

    reconciler.run()

    assert job_item(table, job_id)["status"] == "SUBMITTED"
    store.mark_failed(
        job_id,
        JobError("TEST_CLEANUP", "test", ErrorStage.RECONCILE),
        datetime.now(UTC),
        JudgedStage(JobStage.INPAINT, "ghost-task-young"),
    )


class _ShortContext:
    """A Lambda context with almost no time left."""

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


def test_an_upload_seen_with_too_little_time_left_is_deferred_and_still_completes_once(stack, sim, s3, table, bucket):
    settle_stack(stack, sim)
    job_id = new_job_id("deferred")
    submit = stack.functions["submit"].module
    message = submit.QueueMessage(
        message_id="deferred-1",
        body='{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", '
        f'"s3": {{"bucket": {{"name": "{bucket}"}}, "object": {{"key": "inbox/{job_id}/job.json"}}}}}}]}}',
    )

    submit.record_handler(message, _ShortContext())

    # Handled now, the upload would have created the job's RECEIVED item; deferred, it comes back later.
    assert get_job(table, job_id) is None
    wait_for_status(table, job_id, ("RECEIVED",), timeout=10)
    upload_job(s3, bucket, job_id)
    assert wait_for_status(table, job_id)["status"] == "COMPLETED"
    assert sim.stats()["inpaint_calls"] == 1


def test_a_gzip_encoded_image_is_stored_decoded(stack, s3, bucket):
    image = mask_png(size=(256, 256))

    class GzipHost(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # a CDN that compresses whatever the client asked for
            body = gzip.compress(image)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), GzipHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        copier = ImageCopier(s3, bucket, [ImageOrigin.parse(origin)], max_bytes=1024 * 1024)
        key = f"results/{new_job_id('gzip')}/1.png"
        copied = copier.copy_all({"1": f"{origin}/1.png"}, lambda _: key)
    finally:
        server.shutdown()
        server.server_close()

    assert copied[0].size == len(image)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == image
    assert JobFiles(s3, bucket).object_size(key) == len(image)


def test_an_old_job_is_not_timed_out_while_fetch_itself_is_down(stack, sim, table):
    from vary_region.provider.apiframe_v1 import ApiframeClient, RetryPolicy

    seven_hours_ago = datetime.now(UTC) - timedelta(hours=7)
    reconciler, store = reconciler_at(stack, datetime.now(UTC))
    # Nothing listens on port 9: every Fetch fails before reaching a provider.
    reconciler._apiframe = ApiframeClient("http://127.0.0.1:9", lambda: "key", retry=RetryPolicy(budget_seconds=0.2))
    job_id = new_job_id("fetch-down")
    store.record_received(job_id, seven_hours_ago)
    assert store.claim_submission(job_id, "tok", "hash", "parent", None, {}, seven_hours_ago)
    assert store.mark_submitted(job_id, "tok", "ghost-task-fetch-down", seven_hours_ago)

    report = reconciler.run()

    assert report.outcomes["fetch_failed"] >= 1
    assert job_item(table, job_id)["status"] == "SUBMITTED"
    store.mark_failed(
        job_id,
        JobError("TEST_CLEANUP", "test", ErrorStage.RECONCILE),
        datetime.now(UTC),
        JudgedStage(JobStage.INPAINT, "ghost-task-fetch-down"),
    )
