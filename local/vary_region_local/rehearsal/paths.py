"""The pipeline's paths, driven through the deployed stack as a client would: S3, EventBridge, HTTPS.

Nothing here calls a handler: jobs go into the deployed bucket or onto the bus, webhooks come from the
simulator through the deployed HTTP API, and what is checked is what a user sees (the job's item,
its results in S3, the events on the bus). The reconciler is started as its schedule starts it: the
schedule rule's target invoked with a scheduled event.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import requests
from vary_region_cli.config import Target
from vary_region_cli.events import JobEvents

from vary_region_local.rehearsal.denials import DenialWatch, describe
from vary_region_local.rehearsal.provider import RehearsalProvider
from vary_region_local.rehearsal.report import PathFailed
from vary_region_local.rehearsal.stack import DeployedStack

FINAL = ("COMPLETED", "FAILED", "REJECTED")
JOB_TIMEOUT = 120.0  # a chain is three tasks; cold starts of five functions on a small machine
OBJECT_TIMEOUT = 20.0  # an object written right after the item that names it; seconds, not minutes
RESULT_FILES = ("result.json", "grid.png", "1.png", "2.png", "3.png", "4.png")


class Pipeline:
    """The deployed stack, seen from outside."""

    def __init__(self, stack: DeployedStack, provider: RehearsalProvider, repo: Path, denials: DenialWatch) -> None:
        self.stack, self.provider, self.repo, self.denials = stack, provider, repo, denials
        self.bucket = stack.outputs["JobsBucketName"]
        self.table = boto3.resource("dynamodb").Table(stack.outputs["JobsTableName"])
        self.s3, self.sqs, self.events = boto3.client("s3"), boto3.client("sqs"), boto3.client("events")
        self.lambda_ = boto3.client("lambda")
        self.state_events: JobEvents | None = None

    # ---- helpers ------------------------------------------------------------------------------
    def job(self, job_id: str) -> dict[str, Any]:
        return self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item") or {}

    def wait(self, job_id: str, statuses: tuple[str, ...] = FINAL, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        return self.wait_for(job_id, lambda item: item.get("status") in statuses, f"in {statuses}", timeout)

    def wait_for(
        self, job_id: str, test: Callable[[dict[str, Any]], bool], what: str, timeout: float = JOB_TIMEOUT
    ) -> dict[str, Any]:
        deadline, item = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            item = self.job(job_id)
            if test(item):
                return item
            if self.denials.look():
                raise PathFailed(f"job {job_id} not {what}: {describe(self.denials.found)}")
            time.sleep(0.5)
        shown = {k: item.get(k) for k in ("status", "stage", "percentage", "error", "held_reason")} if item else None
        raise PathFailed(f"job {job_id} not {what} within {timeout:.0f}s; its item: {shown}")

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def drop_job(self, job_id: str, job: dict[str, Any], mask: bytes | None = None) -> None:
        if mask is not None:
            self.put(f"inbox/{job_id}/mask.png", mask)
        self.put(f"inbox/{job_id}/job.json", json.dumps(job).encode())

    def results(self, job_id: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"results/{job_id}/").get("Contents", [])
        return sorted(o["Key"].rsplit("/", 1)[-1] for o in listed)

    def read_json(self, key: str) -> dict[str, Any]:
        return dict(json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()))

    def wait_for_json(self, key: str, timeout: float = OBJECT_TIMEOUT) -> dict[str, Any]:
        """An object a function writes just after the item that announces it (error.json follows
        REJECTED): waited for, boundedly, then read; absent by then is a failed path naming it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.read_json(key)
            except self.s3.exceptions.NoSuchKey:
                if self.denials.look():
                    raise PathFailed(f"s3://{self.bucket}/{key} not written: {describe(self.denials.found)}") from None
                if time.monotonic() >= deadline:
                    raise PathFailed(f"s3://{self.bucket}/{key} not written within {timeout:.0f}s") from None
            time.sleep(0.5)

    def example(self, name: str) -> bytes:
        return (self.repo / "examples" / name).read_bytes()

    def completed_with_results(self, job_id: str) -> dict[str, Any]:
        item = self.wait(job_id)
        if item.get("status") != "COMPLETED":
            raise PathFailed(f"job {job_id} ended {item.get('status')} ({item.get('error')}), not COMPLETED")
        missing = [name for name in RESULT_FILES if name not in self.results(job_id)]
        if missing:
            raise PathFailed(f"job {job_id} COMPLETED without results/{job_id}/{missing}")
        return self.read_json(f"results/{job_id}/result.json")

    # ---- the bus: the CLI's subscription (watch --events, doctor), for every job ------------------
    def listen_to_state_changes(self) -> None:
        target = Target(
            bucket=self.bucket,
            table=self.stack.outputs["JobsTableName"],
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION"),
            profile=None,
            local=False,
            stack_name=self.stack.name,
        )
        self.state_events = JobEvents(target, None, self.stack.outputs["EventBusName"])

    def state_changes(self) -> list[dict[str, Any]]:
        """The details of the state-change events delivered so far (one short poll after another)."""
        assert self.state_events is not None, "listen_to_state_changes first"
        seen: list[dict[str, Any]] = []
        while True:
            got = list(self.state_events.wait(1))
            if not got:
                return seen
            seen += got

    # ---- the reconciler, as its schedule starts it ---------------------------------------------
    def run_reconciler_schedule(self) -> dict[str, Any]:
        function_arn = self.lambda_.get_function(FunctionName=self.stack.function_name("ReconcilerFunction"))[
            "Configuration"
        ]["FunctionArn"]
        rules = self.events.list_rule_names_by_target(TargetArn=function_arn)["RuleNames"]
        if not rules:
            raise PathFailed("no EventBridge rule targets the reconciler: its schedule was not deployed")
        target = next(t for t in self.events.list_targets_by_rule(Rule=rules[0])["Targets"] if t["Arn"] == function_arn)
        rule = self.events.describe_rule(Name=rules[0])
        event = target.get("Input") or json.dumps(
            {
                "version": "0",
                "id": "rehearsal",
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": rule["Arn"].split(":")[4],
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "region": rule["Arn"].split(":")[3],
                "resources": [rule["Arn"]],
                "detail": {},
            }
        )
        answer = self.lambda_.invoke(FunctionName=function_arn, Payload=event.encode())
        payload = answer["Payload"].read()
        if answer.get("FunctionError"):
            raise PathFailed(f"the reconciler failed ({rules[0]} -> {function_arn}): {payload[:500]!r}")
        return {"rule": rules[0], "schedule": rule.get("ScheduleExpression"), "answer": payload[:300].decode()}

    def post_webhook(self, url: str, headers: dict[str, str], body: str) -> requests.Response:
        return requests.post(url, data=body.encode(), headers=headers, timeout=60)
