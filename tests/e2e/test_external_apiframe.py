"""APIFRAME_BASE_URL points the local stack at any APIFRAME-compatible server: here a separately
started simulator with its own API key stands in for "another implementation"."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from vary_region_local.simulator import ApiframeSimulator

from tests.e2e.conftest import API_VERSION, StackProcess, user_env
from tests.support.builders import job_json, mask_png

pytestmark = pytest.mark.e2e


def test_the_stack_uses_the_server_named_by_apiframe_base_url(tmp_path: Path):
    external = ApiframeSimulator(api_key="external-key", step_delay=0.05, api_version=API_VERSION)
    base_url = external.start()
    env = user_env(tmp_path) | {"APIFRAME_BASE_URL": base_url, "APIFRAME_API_KEY": "external-key"}
    stack = StackProcess(tmp_path / "state", env)
    try:
        info = stack.start()
        assert info["apiframe_base_url"] == base_url
        assert info["simulator"] is False
        session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name=info["region"])
        s3 = session.client("s3", endpoint_url=info["aws_endpoint_url"])
        table = session.resource("dynamodb", endpoint_url=info["aws_endpoint_url"]).Table(info["table"])

        s3.put_object(Bucket=info["bucket"], Key="inbox/external-1/mask.png", Body=mask_png())
        s3.put_object(Bucket=info["bucket"], Key="inbox/external-1/job.json", Body=job_json())
        deadline = time.monotonic() + 30
        item: dict[str, Any] = {}
        while time.monotonic() < deadline and item.get("status") not in ("COMPLETED", "FAILED", "REJECTED"):
            time.sleep(0.2)
            item = table.get_item(Key={"job_id": "external-1"}).get("Item") or {}

        assert item.get("status") == "COMPLETED", stack.log_tail()
        assert external.stats()["inpaint_calls"] == 1, "the job went to the server named by APIFRAME_BASE_URL"
        assert external.stats()["image_requests"] >= 5, "its images were copied from that server's origin"
        listed = s3.list_objects_v2(Bucket=info["bucket"], Prefix="results/external-1/")["Contents"]
        assert len(listed) == 8  # grid, 1-4, result.json, and the inputs as sent: mask.png, parent.png
    finally:
        assert stack.stop() == 0
        external.stop()
