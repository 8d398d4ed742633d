"""The whole pipeline on one machine: moto server (S3, DynamoDB, SQS, Secrets Manager), the APIFRAME
simulator (or any APIFRAME-compatible server via APIFRAME_BASE_URL), and the real handlers wired the
way AWS wires them. `vary-region-local` (or `make local`) runs it in the foreground."""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3

from vary_region_local import template
from vary_region_local.console import RECONCILER_THREAD, RepeatedScheduledMetricsHidden
from vary_region_local.http_api import HttpApiServer
from vary_region_local.lambda_runtime import REPO_ROOT, LocalFunction
from vary_region_local.moto_process import LOCAL_CREDENTIALS
from vary_region_local.process import requested_api_version
from vary_region_local.sqs_poller import SqsPoller
from vary_region_local.stream_poller import StreamPoller

SIMULATOR_API_KEY = "sim-local-api-key"
MOTO_START_TIMEOUT_SECONDS = 30
# Settings template.yaml leaves at their defaults (so not among its variables), shortened here for
# a machine's pace and tests; and no X-Ray daemon to trace to. SUBMIT_RETRY_BUDGET_SECONDS is
# StackOptions.submit_retry_budget_seconds.
LOCAL_ONLY_ENVIRONMENT = {
    "COMPLETION_RETRY_DELAY_SECONDS": "1",
    "RESULT_REFETCH_DELAY_SECONDS": "0.2",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


@dataclass(frozen=True)
class StackInfo:
    """What `.local/stack.json` publishes: the contract that clients of the local stack rely on."""

    aws_endpoint_url: str
    region: str
    bucket: str
    table: str
    webhook_url: str
    queue_url: str
    completion_queue_url: str
    apiframe_base_url: str
    apiframe_api_version: str
    simulator: bool
    api_key_secret_id: str
    event_bus_name: str
    # The budget the functions run with (limits, OVER_BUDGET, each stage's price): `make demo` checks
    # that a running stack has room for its chain before it submits anything.
    budget: dict[str, Any]


@dataclass
class StackOptions:
    host: str = "127.0.0.1"
    aws_port: int = 0
    webhook_port: int = 0
    simulator_port: int = 0
    region: str = "us-east-1"
    bucket: str = "vary-region-local"
    table: str = "vary-region-jobs"
    apiframe_base_url: str | None = None  # None: start the built-in simulator
    api_version: str = "v1"  # the APIFRAME generation the functions (and the simulator) speak
    api_key: str = SIMULATOR_API_KEY
    simulator_step_delay: float = 0.3
    reconcile_period_seconds: float = 2.0
    reconcile_quiet_seconds: int = 10
    submit_retry_budget_seconds: float = 5.0
    max_image_bytes: int | None = None
    max_active_tasks: int | None = 10  # None: left empty (10 on v1, the account's maxConcurrentJobs on v2)
    # One: the layer's Powertools Metrics buffer lives in the process, so two webhook containers in
    # one process would flush each other's metrics (each invocation has its own Logger keys).
    # Deployed, Lambda runs each container in its own process and invokes them concurrently.
    webhook_containers: int = 1
    completion_containers: int = 1
    state_dir: Path | None = REPO_ROOT / ".local"
    extra_env: dict[str, str] | None = None
    event_bus_name: str = "vary-region-local"
    # As deployed, the publisher (handed every write to the table) runs in a process of its own;
    # False runs it in this process, where tests reach into its stream poller.
    publisher_process: bool = True


def table_definition(table_name: str) -> dict[str, Any]:
    """The job table exactly as template.yaml declares it, so the local schema cannot drift."""
    props = template.resource_properties("JobsTable")
    definition = {
        "TableName": table_name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        definition["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if props.get("StreamSpecification"):
        definition["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    return definition


class LocalStack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.simulator: Any = None
        self.info: StackInfo | None = None
        self._moto: subprocess.Popen[bytes] | None = None  # moto_process: the stack's AWS
        self._webhook_server: HttpApiServer | None = None
        self.pollers: dict[str, SqsPoller] = {}  # function name -> its event source mapping
        self.stream_poller: StreamPoller | None = None  # the publisher's: the job table's stream
        self._publisher_process: subprocess.Popen[bytes] | None = None
        self._reconcile_stop = threading.Event()
        self._reconcile_thread: threading.Thread | None = None
        self.functions: dict[str, LocalFunction] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> StackInfo:
        opts = self.options
        # Powertools warns when an invocation emitted no metric (a progress webhook): noise here.
        warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
        command = [sys.executable, "-m", "vary_region_local.moto_process", "--host", opts.host]
        self._moto = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*command, "--port", str(opts.aws_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        host, port = _listening_address(self._moto, MOTO_START_TIMEOUT_SECONDS)
        endpoint = f"http://{host}:{port}"
        _run_state_machines(endpoint)
        os.environ.update(
            LOCAL_CREDENTIALS
            | {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": opts.region, "AWS_REGION": opts.region}
        )
        apiframe_url = opts.apiframe_base_url
        if apiframe_url is None:
            from vary_region_local.simulator import ApiframeSimulator

            self.simulator = ApiframeSimulator(
                api_key=opts.api_key,
                host=opts.host,
                port=opts.simulator_port,
                step_delay=opts.simulator_step_delay,
                api_version=opts.api_version,
            )
            apiframe_url = self.simulator.start()
        queues, secret_id = self._create_resources()
        queue_url, completion_url = queues["submit"][0], queues["completion"][0]

        # The webhook endpoint must be listening before the handlers learn its URL.
        self._webhook_server = HttpApiServer(self._invoke_webhook, host=opts.host, port=opts.webhook_port)
        webhook_base = self._webhook_server.url + "/webhook"
        os.environ.update(self._function_environment(apiframe_url, secret_id, webhook_base, queue_url, completion_url))
        self._load_functions()
        self._webhook_server.start()

        sqs = boto3.client("sqs")
        for function, (url, arn, batch_size, workers) in queues.items():
            # What each function's SQS event source mapping does (template.yaml: BatchSize), with
            # as many concurrent invocations as the function has containers (at least two).
            poller = SqsPoller(
                sqs, url, arn, opts.region, self.functions[function].invoke, batch_size=batch_size, workers=workers
            )
            poller.start()
            self.pollers[function] = poller
        stream_arn = boto3.client("dynamodb").describe_table(TableName=opts.table)["Table"]["LatestStreamArn"]
        if opts.publisher_process:
            command = [sys.executable, "-m", "vary_region_local.publisher_process", "--stream-arn", stream_arn]
            self._publisher_process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [*command, "--region", opts.region],
                stdin=subprocess.PIPE,
                env=dict(os.environ),  # the functions' environment, set above
            )
        else:
            self.stream_poller = StreamPoller(
                boto3.client("dynamodbstreams"), stream_arn, opts.region, self.functions["publisher"].invoke
            )
            self.stream_poller.start()
        if opts.reconcile_period_seconds > 0:  # 0: tests run the reconciler themselves
            self._reconcile_thread = threading.Thread(target=self._reconcile_loop, name=RECONCILER_THREAD, daemon=True)
            self._reconcile_thread.start()

        self.info = StackInfo(
            aws_endpoint_url=endpoint,
            region=opts.region,
            bucket=opts.bucket,
            table=opts.table,
            webhook_url=webhook_base,
            queue_url=queue_url,
            completion_queue_url=completion_url,
            apiframe_base_url=apiframe_url,
            apiframe_api_version=opts.api_version,
            simulator=self.simulator is not None,
            api_key_secret_id=secret_id,
            event_bus_name=opts.event_bus_name,
            budget=_budget(),
        )
        if opts.state_dir is not None:
            opts.state_dir.mkdir(parents=True, exist_ok=True)
            (opts.state_dir / "stack.json").write_text(json.dumps(asdict(self.info), indent=2) + "\n")
        return self.info

    def stop(self) -> None:
        self._reconcile_stop.set()
        if self._reconcile_thread:
            self._reconcile_thread.join(timeout=10)
        for poller in self.pollers.values():
            poller.stop()
        if self.stream_poller is not None:
            self.stream_poller.stop()
        if self._publisher_process is not None:
            _stop_child(self._publisher_process)
        if self._webhook_server:
            self._webhook_server.stop()
        if self.simulator:
            self.simulator.stop()
        if self._moto is not None:
            _stop_child(self._moto)
        state = self.options.state_dir
        # Only the stack that wrote stack.json removes it: a failed start must not remove another's.
        if self.info is not None and state is not None and (state / "stack.json").exists():
            (state / "stack.json").unlink()

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()  # whatever had started (moto, the simulator, pollers) must not outlive a failed start
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- wiring --------------------------------------------------------------------------------

    def _create_resources(self) -> tuple[dict[str, tuple[str, str, int, int]], str]:
        """Bucket, table, queues (function -> (url, arn, batch size, pollers)) and the API key secret."""
        opts = self.options
        s3, dynamodb, secrets = boto3.client("s3"), boto3.client("dynamodb"), boto3.client("secretsmanager")
        s3.create_bucket(Bucket=opts.bucket)
        dynamodb.create_table(**table_definition(opts.table))
        dynamodb.update_time_to_live(
            TableName=opts.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        queues = {
            "submit": (*self._queue_with_dlq("vary-region-submit", 30), template.sqs_batch_size("submit"), 2),
            # Hidden for longer than the function may run, as deployed (here by 10 s, not six times).
            "completion": (
                *self._queue_with_dlq("vary-region-completion", template.function("completion").timeout_seconds + 10),
                template.sqs_batch_size("completion"),
                max(2, opts.completion_containers),
            ),
        }
        s3.put_bucket_notification_configuration(
            Bucket=opts.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": queues["submit"][1],
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "inbox/"}]}},
                    }
                ]
            },
        )
        secret_arn = secrets.create_secret(Name="vary-region/apiframe-api-key", SecretString=opts.api_key)["ARN"]
        self._create_event_bus(queues["submit"][1])
        return queues, secret_arn

    def _create_event_bus(self, submit_queue_arn: str) -> None:
        """The bus job state changes go to, and template.yaml's rule that brings `Vary Region Job
        Requested` events to the submit queue (moto delivers to SQS targets; it ignores a target's
        InputPath, so the whole event is delivered, as the template's rule does too)."""
        events = boto3.client("events")
        events.create_event_bus(Name=self.options.event_bus_name)
        rule = template.resource_properties("JobRequestedRule")
        events.put_rule(
            Name="vary-region-job-requested",
            EventBusName=self.options.event_bus_name,
            EventPattern=json.dumps(rule["EventPattern"]),
        )
        events.put_targets(
            Rule="vary-region-job-requested",
            EventBusName=self.options.event_bus_name,
            Targets=[{"Id": "submit-queue", "Arn": submit_queue_arn}],
        )

    @staticmethod
    def _queue_with_dlq(name: str, visibility_timeout: int) -> tuple[str, str]:
        sqs = boto3.client("sqs")

        def arn(url: str) -> str:
            return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn(dlq_url), "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        return url, arn(url)

    def _function_environment(
        self, apiframe_url: str, secret_id: str, webhook_base: str, queue_url: str, completion_url: str
    ) -> dict[str, str]:
        opts = self.options
        origin = urlsplit(apiframe_url)
        # template.yaml's variables with what this stack has where CloudFormation resolves them, and
        # the local choices; the template gives the rest (template.environment).
        resolved = {
            "JOBS_BUCKET": opts.bucket,
            "JOBS_TABLE": opts.table,
            "APIFRAME_BASE_URL": apiframe_url,
            "APIFRAME_API_VERSION": opts.api_version,
            "APIFRAME_API_KEY_SECRET_ID": secret_id,
            "APIFRAME_API_KEY_PARAMETER": "",
            "WEBHOOK_BASE_URL": webhook_base,
            # Exactly the APIFRAME server's origin: plain http is admitted on loopback only.
            "ALLOWED_IMAGE_HOSTS": f"{origin.scheme}://{origin.netloc}",
            "RECONCILE_QUIET_SECONDS": str(opts.reconcile_quiet_seconds),
            "SUBMIT_QUEUE_URL": queue_url,
            "COMPLETION_QUEUE_URL": completion_url,
            "MAX_ACTIVE_TASKS": "" if opts.max_active_tasks is None else str(opts.max_active_tasks),
            "EVENT_BUS_NAME": opts.event_bus_name,
            "HOLD_DELAY_SECONDS": "1",
        }
        if opts.max_image_bytes:
            resolved["MAX_IMAGE_BYTES"] = str(opts.max_image_bytes)
        env = template.environment(resolved, os.environ) | LOCAL_ONLY_ENVIRONMENT
        env["SUBMIT_RETRY_BUDGET_SECONDS"] = str(opts.submit_retry_budget_seconds)
        return env | (opts.extra_env or {})

    def _load_functions(self) -> None:
        from vary_region.settings import get_settings

        get_settings.cache_clear()  # each stack's functions are fresh containers with this environment
        from vary_region import observability

        # The shared Metrics may have been created (by an earlier import) before this environment was set.
        observability.metrics.namespace = os.environ["POWERTOOLS_METRICS_NAMESPACE"]
        observability.metrics.service = os.environ["POWERTOOLS_SERVICE_NAME"]
        containers = {"webhook": self.options.webhook_containers, "completion": self.options.completion_containers}
        # Each function of template.yaml, with its Timeout and MemorySize there.
        self.functions = {
            folder: LocalFunction.of(deployed, containers=containers.get(folder, 1))
            for folder, deployed in template.functions().items()
        }

    def _invoke_webhook(self, event: dict[str, Any]) -> Any:
        return self.functions["webhook"].invoke(event)

    def run_reconciler(self) -> Any:
        event = {
            "version": "0",
            "id": "local",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "region": self.options.region,
            "resources": [],
            "detail": {},
        }
        return self.functions["reconciler"].invoke(event)

    def _reconcile_loop(self) -> None:
        while not self._reconcile_stop.wait(self.options.reconcile_period_seconds):
            try:
                self.run_reconciler()
            except Exception as exc:
                print(f"reconciler error: {type(exc).__name__}: {exc}", file=sys.stderr)


def _listening_address(process: subprocess.Popen[bytes], timeout: float) -> tuple[str, int]:
    """The (host, port) a child server prints as its first line, once it listens."""
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else b""))
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    if not line or not line[0]:
        code = process.poll()
        process.kill()  # moto that cannot bind waits for ever, deaf to its stdin: never leave it behind
        raise RuntimeError(f"moto's server did not start within {timeout:.0f}s (exit code {code})")
    # Whatever it prints later goes on to our stdout: a pipe left unread would block it once full.
    forward = threading.Thread(target=_forward, args=(process.stdout, sys.stdout), name="moto-output", daemon=True)
    forward.start()
    address = json.loads(line[0])
    return str(address["host"]), int(address["port"])


def _forward(source: Any, target: Any) -> None:
    for raw in iter(source.readline, b""):
        target.write(raw.decode(errors="replace"))


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    """A child of the stack (moto, the publisher) stops when its stdin closes."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --- the command line ------------------------------------------------------------------------------

PROG = "vary-region-local"
EXIT_CANNOT_START = 1


@dataclass(frozen=True)
class PortChoice:
    """One of the stack's listening ports as the user chooses it: option, environment variable, default."""

    field: str
    option: str
    env: str
    default: int
    serves: str


PORTS = (
    PortChoice("aws_port", "--aws-port", "LOCAL_AWS_PORT", 4566, "AWS endpoint, moto server"),
    PortChoice("webhook_port", "--webhook-port", "LOCAL_WEBHOOK_PORT", 4580, "webhook endpoint"),
    PortChoice("simulator_port", "--simulator-port", "LOCAL_SIMULATOR_PORT", 4590, "APIFRAME simulator"),
)


def port_problem(host: str, port: int) -> str | None:
    """Why `port` cannot be listened on at `host` right now, or None when it can (0 always can).

    A bind test, because only binding sees every listener (a connect test misses one on another
    address), and because it must happen before anything starts: moto's server binds in a thread
    and, when that fails, leaves its caller waiting for ever.
    """
    if port == 0:
        return None
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, OverflowError) as exc:
        return f"cannot use host {host!r}: {exc}"
    try:
        # create_server sets SO_REUSEADDR as the stack's servers do, so a port left in TIME_WAIT
        # by a stack that has just stopped counts as free, and one with a listener does not.
        with socket.create_server(address, family=family):
            return None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "in use"
        return os.strerror(exc.errno) if exc.errno else str(exc)


def port_conflicts(host: str, ports: dict[str, int], state_dir: Path | None) -> list[str]:
    """One message per port the stack cannot have, each saying how to choose another."""
    messages: list[str] = []
    chosen: dict[int, PortChoice] = {}
    for choice in PORTS:
        port = ports.get(choice.field, 0)
        if choice.field not in ports or port == 0:
            continue
        how = f"choose another port: {choice.env}=0 make local, or {PROG} {choice.option} 0 (0 = any free port)"
        if port in chosen:
            messages.append(f"port {port} is given to both {chosen[port].option} and {choice.option}: {how}")
            continue
        chosen[port] = choice
        problem = port_problem(host, port)
        if problem is not None:
            messages.append(
                f"port {port} on {host} ({choice.serves}) is {problem}: is another local stack (`make local`) "
                f"or another program using it? Stop that, or {how}"
                if problem == "in use"
                else f"port {port} on {host} ({choice.serves}) cannot be used: {problem}; {how}"
            )
    stack_file = state_dir / "stack.json" if state_dir is not None else None
    if messages and stack_file is not None and stack_file.is_file():
        messages.append(
            f"{stack_file} exists: a local stack may already be running there, and the CLI uses it as it "
            f"is; a second stack at the same time needs free ports and its own --state-dir"
        )
    return messages


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535; 0 = any free port)")
    return port


def _budget() -> dict[str, Any]:
    from vary_region.settings import get_settings

    settings = get_settings()  # the functions' own, read from the environment start() set
    return {
        "daily_credit_limit": settings.daily_credit_limit,
        "monthly_credit_limit": settings.monthly_credit_limit,
        "over_budget": settings.over_budget,
        "credits": {stage: settings.credits_of(stage) for stage in ("imagine", "upscale", "inpaint")},
    }


def _run_state_machines(endpoint: str) -> None:
    """moto's Step Functions runs the executions a workflow starts (off by default: it only records
    them), so a caller's callback task really waits for a job here as it does in AWS."""
    import urllib.request

    body = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
    request = urllib.request.Request(f"{endpoint}/moto-api/config", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def _stop_unstarted(stack: LocalStack) -> None:
    """Stop whatever a failed start() left running, without touching the state dir (its stack.json,
    if any, belongs to another stack: start() writes ours last) and without waiting for ever."""
    stack.options.state_dir = None
    stopper = threading.Thread(target=stack.stop, name="stop-after-failed-start", daemon=True)
    stopper.start()
    stopper.join(timeout=5)  # every server and poller thread is a daemon: exiting ends the rest


# The stack parameters `make local` takes from its own environment, as the stack sets them in AWS.
PARAMETER_VARIABLES = (
    "CALLER_STATE_MACHINE_ARNS",
    "MASK_SOURCES",
    "MAX_ACTIVE_TASKS",
    "DAILY_CREDIT_LIMIT",
    "MONTHLY_CREDIT_LIMIT",
    "OVER_BUDGET",
    "RETURN_FAILED_CREDITS",
    "CREDITS_IMAGINE",
    "CREDITS_UPSCALE",
    "CREDITS_INPAINT",
    "BALANCE_CACHE_SECONDS",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    for choice in PORTS:
        parser.add_argument(
            choice.option,
            type=_port,
            # A string default goes through `type` too: a bad environment value is a usage error, not a traceback.
            default=os.environ.get(choice.env) or str(choice.default),
            metavar="PORT",
            help=f"{choice.serves} port (env {choice.env}; default {choice.default}; 0 = any free port)",
        )
    parser.add_argument(
        "--apiframe-base-url",
        default=os.environ.get("APIFRAME_BASE_URL") or None,
        help="an APIFRAME-compatible server to use instead of the built-in simulator",
    )
    parser.add_argument("--api-key", default=os.environ.get("APIFRAME_API_KEY", SIMULATOR_API_KEY))
    parser.add_argument(
        "--api-version",
        choices=("v1", "v2"),
        default=requested_api_version(),
        help="the APIFRAME generation (env APIFRAME_API_VERSION); the built-in simulator speaks it too",
    )
    parser.add_argument("--step-delay", type=float, default=0.3, help="simulator: seconds between task steps")
    parser.add_argument("--reconcile-period", type=float, default=2.0)
    parser.add_argument("--reconcile-quiet", type=int, default=10)
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".local")
    args = parser.parse_args(argv)
    # The handlers' JSON logs are the stack's console: flush each line, also when sent to a file.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    # An idle stack's reconciler would print the same balance every period (see console.py).
    sys.stdout = RepeatedScheduledMetricsHidden(sys.stdout)
    ports = {"aws_port": args.aws_port, "webhook_port": args.webhook_port}
    if args.apiframe_base_url is None:
        ports["simulator_port"] = args.simulator_port
    conflicts = port_conflicts(args.host, ports, args.state_dir)
    if conflicts:
        for message in conflicts:
            print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_START
    parameters = {name: os.environ[name] for name in PARAMETER_VARIABLES if os.environ.get(name, "").strip()}
    from vary_region.settings import Settings, SettingsError  # only the settings module: stdlib alone

    try:  # read as the functions will read them: a bad value is a usage error now, not a failed start
        Settings.from_env({"JOBS_BUCKET": "-", "JOBS_TABLE": "-"} | parameters)
    except SettingsError as exc:
        parser.error(str(exc))
    options = StackOptions(
        host=args.host,
        aws_port=args.aws_port,
        webhook_port=args.webhook_port,
        simulator_port=args.simulator_port,
        apiframe_base_url=args.apiframe_base_url,
        api_key=args.api_key,
        api_version=args.api_version,
        simulator_step_delay=args.step_delay,
        reconcile_period_seconds=args.reconcile_period,
        reconcile_quiet_seconds=args.reconcile_quiet,
        state_dir=args.state_dir,
        max_active_tasks=None,  # left empty, as the template's default: 10 on v1, the account's on v2
        extra_env=parameters,
    )
    stack = LocalStack(options)
    stopped, starting = threading.Event(), threading.Event()
    starting.set()

    def on_signal(signum: int, frame: Any) -> None:
        stopped.set()
        if starting.is_set():  # unwind out of whatever start() is waiting for, once
            starting.clear()
            raise KeyboardInterrupt

    # Handle both explicitly: a stack started in the background by a script inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        info = stack.start()
        starting.clear()
    except KeyboardInterrupt:
        starting.clear()
        if stack.info is not None:  # the signal came just after start() returned: a normal stop
            stack.stop()
        else:
            _stop_unstarted(stack)
        print(f"{PROG}: stopped while starting.", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:
        starting.clear()
        traceback.print_exc()
        _stop_unstarted(stack)
        print(f"{PROG}: error: the local stack could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    print("vary-region local stack is ready:", flush=True)
    print(json.dumps(asdict(info), indent=2), flush=True)
    print(f"(written to {args.state_dir / 'stack.json'}; Ctrl-C stops the stack)", flush=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("vary-region local stack stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
