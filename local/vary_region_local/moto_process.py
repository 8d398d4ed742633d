"""moto's server (the local stack's AWS) in a process of its own.

Deployed, S3, DynamoDB and SQS never share a CPU with the functions; in the stack's own process
moto's request handling competed for one interpreter lock with the handlers, and every webhook
waited for it. The stack starts this module, reads the port it listens on from its first line of
output, and stops it by closing its stdin, which also ends it when the stack dies without stopping
it. The DynamoDB fixes of moto_fixes are applied here, where moto runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

from vary_region_local.moto_fixes import serialise_dynamodb_requests

# moto's own account's keys (any pair does): what the service integrations sign their calls with.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vary_region_local.moto_process", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: the stack, not this process, decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from moto.server import ThreadedMotoServer

    serialise_dynamodb_requests()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # Step Functions' service integrations (sqs:sendMessage.waitForTaskToken, ...) call AWS through
    # boto3 from inside this process: pointed at moto itself, with moto's credentials, they stay here.
    # moto 5.2.5 names its endpoint http://localhost:<MOTO_PORT> (5000 unless set), over AWS_ENDPOINT_URL.
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    os.environ["MOTO_PORT"] = str(port)
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    print(json.dumps({"host": host, "port": port}), flush=True)
    sys.stdin.buffer.read()  # EOF: the stack closed our stdin, or is gone
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
