"""Secrets never reach the logs: one complete job runs while everything written to stdout/stderr and
every log record (at DEBUG) is captured; neither the APIFRAME key, nor the job's webhook secret, nor
its stored hash, nor any part of the mask's base64 may appear."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from tests.support.builders import job_json, mask_png, new_job_id, secret_of, upload_job
from tests.support.waits import wait_for_job, wait_until

BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{40,}")
SLICE = 40


@contextlib.contextmanager
def app_logs_to_fd1() -> Iterator[Any]:
    """Powertools' log handler keeps the stdout object it saw when the stack started (pytest's
    session-level capture, which `capfd` does not read). While this is active, it writes to file
    descriptor 1 instead, which `capfd` captures. Enter it in the test body, where `capfd` owns fd 1.
    Yields a flush function."""
    handlers = [h for h in logging.getLogger("vary-region").handlers if type(h) is logging.StreamHandler]
    assert handlers, "the functions log through the Powertools logger 'vary-region'"
    fd1 = open(os.dup(1), "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed below
    previous = [h.setStream(fd1) for h in handlers]
    try:
        yield fd1.flush
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)
        fd1.close()


def rendered(record: logging.LogRecord) -> str:
    """Everything a record carries: message, arguments, extra keys and the formatted exception."""
    parts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def leaked_base64_slices(text: str, secret_base64: str) -> list[str]:
    """Every 40-character window of `secret_base64` that occurs in `text` (checked only inside runs of
    base64 characters, which is where such a slice can occur)."""
    windows = {secret_base64[i : i + SLICE] for i in range(len(secret_base64) - SLICE + 1)}
    found: list[str] = []
    for run in BASE64_RUN.findall(text):
        found.extend(run[i : i + SLICE] for i in range(len(run) - SLICE + 1) if run[i : i + SLICE] in windows)
    return found


# moto and werkzeug are the local stand-in for AWS itself: their logs do not exist in a deployment.
AWS_STAND_IN_LOGGERS = ("moto", "werkzeug")


def _from(record: logging.LogRecord, prefixes: tuple[str, ...]) -> bool:
    return any(record.name == p or record.name.startswith(p + ".") for p in prefixes)


def leaks(secrets: dict[str, str], mask_base64: str, channels: dict[str, list[tuple[str, str]]]) -> dict[str, set[str]]:
    """secret name -> where it was found (channel and logger name); never the secret itself."""
    found: dict[str, set[str]] = {}
    for channel, entries in channels.items():
        for source, text in entries:
            for name, value in secrets.items():
                if value in text:
                    found.setdefault(name, set()).add(f"{channel}:{source}")
            if leaked_base64_slices(text, mask_base64):
                found.setdefault("mask base64", set()).add(f"{channel}:{source}")
    return found


def test_given_complete_job_when_all_output_captured_at_debug_then_no_secret_appears(
    stack, sim, s3, table, bucket, capfd, caplog
):
    """The root logger at DEBUG is what Lambda's ApplicationLogLevel=DEBUG (or a debugging session)
    sets; POWERTOOLS_LOG_LEVEL=DEBUG sets the functions' own logger. The AWS SDK's wire loggers
    print request and response bodies at DEBUG (the key from Secrets Manager, the hash in DynamoDB
    items), so they are checked too."""
    from aws_lambda_powertools.utilities import parameters

    caplog.set_level(logging.DEBUG)  # root, so every library logger
    service_logger = logging.getLogger("vary-region")
    mask = mask_png(box=(37, 41, 301, 287))
    job_id = new_job_id("secrets")
    with contextlib.ExitStack() as cleanup:
        service_logger.setLevel(logging.DEBUG)  # as with POWERTOOLS_LOG_LEVEL=DEBUG
        cleanup.callback(service_logger.setLevel, logging.INFO)
        flush_app_logs = cleanup.enter_context(app_logs_to_fd1())
        parameters.clear_caches()  # a cold start: the API key is read from Secrets Manager during the capture
        upload_job(s3, bucket, job_id, spec=job_json(prompt="a paper lantern", metadata={"case": "secrets"}), mask=mask)
        # Wait through S3: the test's own DynamoDB reads would log the item (and its hash) at DEBUG.
        wait_until(lambda: _exists(s3, bucket, f"results/{job_id}/result.json"), timeout=30, message="result.json")
        # The state is written after result.json, and its log line after that: wait for the line itself.
        wait_until(
            lambda: any(r.getMessage() == "job completed" for r in list(caplog.records)),
            timeout=30,
            message="the completion's log line",
        )
        assert sim.wait_idle(timeout=20)
        flush_app_logs()
        records = list(caplog.records)
        out, err = capfd.readouterr()

    # result.json is written before the job says COMPLETED: wait for the state (outside the capture).
    item = wait_for_job(table, job_id)
    assert item["status"] == "COMPLETED"
    task = sim.task(item["task_id"])
    secrets = {
        "api key": stack.options.api_key,
        "webhook secret": secret_of(task),
        "webhook secret hash": item["webhook_secret_hash"],
    }
    assert task["mask_bytes"] == mask, "the mask really was sent (as base64 in a data URL)"
    # The capture is live: the job's own log lines are in both channels, DEBUG records included.
    assert '"message":"job completed"' in out
    assert any(r.getMessage() == "job completed" for r in records)
    assert any(r.levelno == logging.DEBUG for r in records)

    checked = [r for r in records if not _from(r, AWS_STAND_IN_LOGGERS)]
    channels = {
        "stdout": [("fd1", out)],
        "stderr": [("fd2", err)],
        "logging": [(r.name, rendered(r)) for r in checked],
    }
    found = leaks(secrets, base64.b64encode(mask).decode(), channels)
    assert found == {}, f"secrets found in the output: { {k: sorted(v) for k, v in found.items()} }"


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))
