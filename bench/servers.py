"""S3 (moto server) and the image hosts (the APIFRAME simulator's), each in a process of its own.

The copy benchmarks measure a client against remote servers: running the servers in the
benchmark's own interpreter would make the copier's threads and the servers' threads share one
GIL, and the memory probe would count the servers' buffers. S3 and the image hosts are apart too:
in one process, five downloads being served slowed five uploads being stored (and the other way
round), which real S3 and a CDN never do to each other. `python -m bench.servers s3|images` prints
its endpoints as one JSON line and runs until its stdin closes.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "vary-region-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}  # moto accepts any
REGION = "us-east-1"
# Small parent pictures: the padding, not PIL, decides an image's size, so even the smoke run's
# 64 KB images can be hit exactly.
_PICTURE_SIZE = (64, 64)


@dataclass(frozen=True)
class Servers:
    s3_endpoint: str
    image_host: str  # the host whose faults (latency, bandwidth cap, padding) the benchmarks set
    plain_host: str  # never faulted: warm-ups that must not pay for the benchmark's settings

    def aws_environment(self) -> dict[str, str]:
        """What boto3 needs to reach moto, as the local stack sets it (AWS_ENDPOINT_URL and all)."""
        return CREDENTIALS | {"AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    @staticmethod
    def image_url(host: str, name: str) -> str:
        # The simulator serves the "parent" picture of any task id without creating a task.
        return f"{host}/images/{name}/parent.png"

    def set_faults(self, **faults: Any) -> None:
        response = requests.post(f"{self.image_host}/_sim/faults", json=faults, timeout=10)
        response.raise_for_status()

    def picture_bytes(self, host: str, name: str) -> int:
        """Size of the unpadded picture; fetching it also renders and caches it server-side."""
        response = requests.get(self.image_url(host, name), timeout=30)
        response.raise_for_status()
        return len(response.content)


@contextmanager
def running_servers() -> Iterator[Servers]:
    with _server_process("s3") as s3, _server_process("images") as images:
        yield Servers(**s3, **images)


@contextmanager
def _server_process(role: str) -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", role],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.servers {role} exited before it was ready (code {process.wait()})")
        yield json.loads(line)
    finally:
        process.stdin.close()  # the servers' signal to stop
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _credential_kwargs() -> dict[str, str]:
    return {name.lower(): value for name, value in CREDENTIALS.items()}


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    stops = _start_s3() if role == "s3" else _start_image_hosts() if role == "images" else None
    if stops is None:
        raise SystemExit("usage: python -m bench.servers s3|images")
    try:
        sys.stdin.read()
    finally:
        for stop in stops:
            stop()


def _start_s3() -> list[Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    s3_endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, **_credential_kwargs())
    s3.create_bucket(Bucket=BUCKET)
    print(json.dumps({"s3_endpoint": s3_endpoint}), flush=True)
    return [moto.stop]


def _start_image_hosts() -> list[Any]:
    from vary_region_local.simulator import ApiframeSimulator

    image_host, plain_host = (ApiframeSimulator(image_size=_PICTURE_SIZE) for _ in range(2))
    print(json.dumps({"image_host": image_host.start(), "plain_host": plain_host.start()}), flush=True)
    return [image_host.stop, plain_host.stop]


if __name__ == "__main__":
    main()
