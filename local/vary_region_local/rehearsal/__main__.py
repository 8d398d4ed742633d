"""`make rehearse`: deploy template.yaml into MiniStack (IAM enforced) and run the pipeline's paths.

    python -m vary_region_local.rehearsal --ministack-python .venv-rehearse/bin/python \\
        --sam .venv-sam/bin/sam --runtime-python python3.13 [--template FILE] [--state-dir DIR]

Exit 0 only when the stack deployed and every path passed; every process it started is stopped
on the way out, whatever happened (Ctrl-C and SIGTERM included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

import boto3

from vary_region_local.rehearsal import checks, doctor_runs, mutants, workarounds
from vary_region_local.rehearsal.denials import DenialWatch
from vary_region_local.rehearsal.emulator import EmulatorError, MiniStack, client_environment, make_certificate
from vary_region_local.rehearsal.paths import Pipeline
from vary_region_local.rehearsal.provider import API_KEY, RehearsalProvider
from vary_region_local.rehearsal.report import Report
from vary_region_local.rehearsal.stack import DeployedStack, DeployError, Sam, stack_name

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ministack-python", type=Path, required=True, help="the Python that has MiniStack")
    parser.add_argument("--sam", type=Path, required=True, help="the pinned SAM CLI")
    parser.add_argument("--runtime-python", type=Path, required=True, help="a python3.13 (sam build needs it)")
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".local" / "rehearse")
    parser.add_argument(
        "--no-iam-mutants", dest="iam_mutants", action="store_false", help="skip the IAM mutants (iam_mutants.toml)"
    )
    parser.add_argument("--iam-mutant", action="append", metavar="NAME", help="run only this IAM mutant (repeatable)")
    return parser.parse_args(argv)


def deploy(args: argparse.Namespace, provider: RehearsalProvider) -> DeployedStack:
    sam = Sam(args.sam, REPO_ROOT, args.state_dir, dict(os.environ), args.runtime_python)
    started = time.monotonic()
    built = sam.build(args.template.resolve())
    print(f"==> sam build ({time.monotonic() - started:.0f}s, layer for this machine: LAYER_PLATFORMS=)", flush=True)
    overrides = {
        # The local endpoints that replace AWS's and APIFRAME's: the simulator, over TLS.
        "ApiframeBaseUrl": provider.base_url,
        "AllowedImageHosts": provider.base_url,
        # Two tunings: the lost-webhook path waits 30 s (the minimum) for its job to be quiet, not 5 min.
        "ReconcileQuietSeconds": str(checks.QUIET_SECONDS),
        # And a held job wakes up in 5 s, not 30 (the held-job path).
        "HoldDelaySeconds": str(checks.HOLD_DELAY_SECONDS),
    }
    started = time.monotonic()
    sam.deploy(built, overrides)
    stack = DeployedStack.read(stack_name(REPO_ROOT), boto3.client("cloudformation"))
    print(f"==> sam deploy: {stack.name} CREATE_COMPLETE ({time.monotonic() - started:.0f}s)", flush=True)
    lambda_ = boto3.client("lambda")
    routes = workarounds.create_http_api_routes(
        stack.processed_template,
        stack.resources.__getitem__,
        lambda logical: lambda_.get_function(FunctionName=stack.resources[logical])["Configuration"]["FunctionArn"],
        boto3.client("apigatewayv2"),
    )
    print(f"    workaround {workarounds.HTTP_API_ROUTES.name}: created {routes}", flush=True)
    # As docs/deploy.md says: the key goes into the secret the stack made, before any job.
    boto3.client("secretsmanager").put_secret_value(SecretId=stack.outputs["ApiKeySecretArn"], SecretString=API_KEY)
    print("==> API key put into the stack's secret (output ApiKeySecretArn)", flush=True)
    return stack


def run_paths(pipeline: Pipeline, report: Report) -> None:
    pipeline.listen_to_state_changes()
    report.run("lost webhook: submitted, its final webhook to be dropped", lambda: _started(pipeline))
    for start in (checks.start_rejected, checks.start_plain, checks.start_chain, checks.start_requested):
        start(pipeline)
    report.run("rejected job: a broken mask", lambda: checks.check_rejected(pipeline))
    report.run("plain job: webhooks, copies, results", lambda: checks.check_plain(pipeline))
    report.run("chain from a prompt with a region", lambda: checks.check_chain(pipeline))
    report.run("job requested by an event", lambda: checks.check_requested(pipeline))
    # No other job pays from here on (the lost webhook's task exists): APIFRAME's 429s are the held job's.
    checks.start_held(pipeline)
    report.run("forged webhooks refused", lambda: checks.check_forged_webhook(pipeline))
    report.run("held job: APIFRAME unavailable, back on the submit queue", lambda: checks.check_held(pipeline))
    report.run("missing error.json repaired by the next delivery", lambda: checks.check_repair(pipeline))
    report.run("lost webhook recovered by the reconciler", lambda: checks.check_lost_webhook(pipeline))
    report.run("state changes on the bus", lambda: checks.check_state_changes(pipeline))
    gap = workarounds.CALLBACK_TASK_IAM
    report.skip(
        "Step Functions sample workflow (examples/stepfunctions/) answered by the publisher",
        f"MiniStack {gap.seen_in} ({gap.name}): {gap.reason}",
    )
    # The denials so far are the paths' own: judged now, before the IAM mutants cause theirs.
    pipeline.denials.into(report)
    report.run("vary-region doctor on the deployed stack", lambda: doctor_runs.check_healthy(pipeline))
    report.run("doctor: API key secret left as the placeholder", lambda: doctor_runs.check_placeholder_secret(pipeline))
    report.run("doctor: submit function without WriteResults", lambda: doctor_runs.check_removed_permission(pipeline))


def _started(pipeline: Pipeline) -> str:
    checks.start_lost_webhook(pipeline)
    return "task created at the simulator with drop_webhooks=final"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(args.state_dir)
    args.state_dir.mkdir(parents=True)
    print(f"==> emulator gaps worked around in this tooling ({len(workarounds.ALL)}):")
    for gap in workarounds.ALL:
        print(f"    {gap.name} (MiniStack {gap.seen_in}): {gap.reason}")
    certificate = make_certificate(args.state_dir / "tls")
    emulator = MiniStack(args.ministack_python, args.state_dir, certificate, free_port())
    provider = RehearsalProvider(certificate, emulator.endpoint)
    report, error = Report(), ""
    try:
        provider.start()
        emulator.start()
        os.environ.update(client_environment(emulator.endpoint, certificate))
        print(
            f"==> MiniStack on {emulator.endpoint} (AUTH=true, TLS; up in {time.monotonic() - began:.0f}s), "
            f"simulator on {provider.base_url}",
            flush=True,
        )
        stack = deploy(args, provider)
        paths_began = time.monotonic()
        denials = DenialWatch(emulator.log_path, stack)
        pipeline = Pipeline(stack, provider, REPO_ROOT, denials)
        run_paths(pipeline, report)
        print(f"==> paths: {time.monotonic() - paths_began:.0f}s", flush=True)
        if args.iam_mutants:
            mutants.run_all(pipeline, report, args.iam_mutant)
    except (EmulatorError, DeployError) as exc:
        error = str(exc)
    except (KeyboardInterrupt, SystemExit) as exc:
        error = f"interrupted ({exc or 'Ctrl-C'})"
    finally:
        emulator.stop()
        provider.stop()
    return summarize(report, error, time.monotonic() - began, args.state_dir)


def summarize(report: Report, error: str, seconds: float, state_dir: Path) -> int:
    print(f"\n==> rehearsal summary ({seconds:.0f}s; logs in {state_dir})")
    for name, detail in report.passed:
        print(f"PASS     {name}: {detail}")
    for name, why in report.skipped:
        print(f"SKIPPED  {name}: {why}")
    for name, why in report.failed:
        print(f"FAIL     {name}: {why}")
    if error:
        print(f"FAIL     {error}")
    ok = not error and not report.failed and bool(report.passed)
    print(f"{len(report.passed)} passed, {len(report.failed) + bool(error)} failed, {len(report.skipped)} skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
