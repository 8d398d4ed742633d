"""The publisher function and its stream event source mapping in a process of their own.

Deployed, every function runs in its own execution environment. The publisher is handed every write
to the job table, so in the stack's own process it competed for one interpreter lock with the
webhook handler and moto: `make bench` measured the final webhook's p95 at 190 ms beside it, against
a 100 ms target. The stack starts this module with its functions' environment and stops it by
closing its stdin, which also ends it when the stack dies without stopping it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings

import boto3

from vary_region_local.lambda_runtime import LocalFunction
from vary_region_local.stream_poller import StreamPoller
from vary_region_local.template import function


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vary_region_local.publisher_process", description=__doc__)
    parser.add_argument("--stream-arn", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    publisher = LocalFunction.of(function("publisher"))
    # Lambda polls each shard of a DynamoDB stream four times a second; so does this poller, rather
    # than every 50 ms, since each read takes moto's one DynamoDB lock from the webhook's writes.
    poller = StreamPoller(
        boto3.client("dynamodbstreams"), args.stream_arn, args.region, publisher.invoke, idle_seconds=0.25
    )
    # Ctrl-C reaches the whole process group: the stack, not this process, decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    poller.start()
    sys.stdin.buffer.read()  # EOF: the stack closed our stdin, or is gone
    poller.stop()
    for error in poller.errors:
        print(f"publisher stream poller: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
