"""vary-region: submit Vary Region (inpaint) jobs to the pipeline's bucket and follow them.

Exit codes: 0 success; 1 the job FAILED or was REJECTED (watch), or a check failed (doctor);
2 watch timed out; 3 the command could not do its work (configuration, missing job, AWS error,
bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vary_region.core.job import JobStatus

from vary_region_cli import jobs
from vary_region_cli.config import CliError, CliSettings, Target, resolve, settings_from_env
from vary_region_cli.masks import MaskError, Rect, check_mask_file, parse_size, rectangle_mask_png, region_document

PROG = "vary-region"
EXIT_OK, EXIT_JOB_FAILED, EXIT_TIMEOUT, EXIT_ERROR = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _global_options(defaults: bool) -> _Parser:
    """The connection options, accepted before or after the command (`vary-region --local list`
    and `vary-region list --local` both work)."""
    default = None if defaults else argparse.SUPPRESS
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("where the jobs are")
    group.add_argument("--bucket", default=default, help="jobs bucket (env VARY_REGION_BUCKET)")
    group.add_argument("--table", default=default, help="jobs table (env VARY_REGION_TABLE)")
    group.add_argument(
        "--stack-name",
        default=default,
        help="read bucket and table from this CloudFormation stack's outputs (env VARY_REGION_STACK_NAME)",
    )
    group.add_argument("--endpoint-url", default=default, help="AWS endpoint (env AWS_ENDPOINT_URL)")
    group.add_argument("--region", default=default, help="AWS region (env AWS_REGION, AWS_DEFAULT_REGION)")
    group.add_argument("--profile", default=default, help="AWS profile (env AWS_PROFILE)")
    group.add_argument(
        "--local",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="use the local stack (`make local`) described by the stack file; also the default when "
        "no bucket, table, stack name or endpoint is given and a .local/stack.json is found",
    )
    group.add_argument(
        "--stack-file",
        type=Path,
        default=default,
        help="the local stack's stack.json (default: the nearest .local/stack.json in this folder or a "
        "parent folder); implies --local",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_global_options(defaults=False)]

    submit = commands.add_parser(
        "submit",
        parents=common,
        help="upload a job into inbox/ and print its id",
        description="Upload a job (job.json then the mask, or one inline file) and print its id on stdout.",
    )
    start = submit.add_mutually_exclusive_group(required=True)
    start.add_argument(
        "--parent-task-id", help="the upscale-1x task whose image is edited (an imagine task with --index)"
    )
    start.add_argument("--imagine", metavar="PROMPT", help="start from a prompt: imagine -> upscale-1x -> inpaint")
    submit.add_argument("--index", choices=("1", "2", "3", "4"), help="which image of the imagine grid to upscale")
    submit.add_argument("--aspect-ratio", metavar="W:H", help="with --imagine: the grid's aspect ratio (default 1:1)")
    submit.add_argument("--prompt", help="what to draw in the selected region")
    # A mask file, or shapes of any kinds mixed (checked in cmd_submit: argparse groups cannot say
    # "--mask, or any of the three shape options together").
    mask = submit.add_argument_group("the region to redraw: --mask, or any mix of --rect, --ellipse and --polygon")
    mask.add_argument(
        "--mask",
        type=Path,
        metavar="FILE",
        help="mask image (PNG, JPEG or WebP; black background, white = region to redraw)",
    )
    mask.add_argument(
        "--rect",
        action="append",
        metavar="X,Y,W,H",
        help="a region to redraw (repeat for several); drawn by the pipeline at the parent's real size, "
        "or here into a mask file with --size",
    )
    mask.add_argument("--ellipse", action="append", metavar="CX,CY,RX,RY", help="an elliptical region (repeatable)")
    mask.add_argument(
        "--polygon", action="append", metavar="X1,Y1,X2,Y2,X3,Y3,...", help="a polygonal region (repeatable)"
    )
    submit.add_argument(
        "--units",
        choices=("px", "fraction"),
        default="px",
        help="region coordinates in pixels of the parent (default) or fractions 0..1 of its width and height",
    )
    submit.add_argument("--size", metavar="W,H", help="with --rect: draw a mask file of this size here instead")
    submit.add_argument(
        "--mask-fit",
        choices=("exact", "resize"),
        help="a mask file of another size than the parent: rejected (exact, the default) or scaled to it (resize)",
    )
    submit.add_argument("--metadata", metavar="JSON", help="a small JSON object echoed into result.json")
    submit.add_argument("--job-id", help="default: a new id like job-20261126-120501-ab12cd")
    submit.add_argument(
        "--inline", action="store_true", help="upload one inbox/<job-id>.json carrying the mask as a data URL"
    )
    submit.set_defaults(handler=cmd_submit, command_parser=submit)

    watch = commands.add_parser(
        "watch",
        parents=common,
        help="follow a job with a progress bar until it ends",
        description="Follow a job until it is final. Exit 0 COMPLETED, 1 FAILED or REJECTED, 2 timeout.",
    )
    watch.add_argument("job_id", metavar="JOB_ID")
    watch.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds (default: never)")
    watch.add_argument("--interval", type=float, default=0.5, metavar="S", help="poll every S seconds (0.5)")
    watch.add_argument(
        "--events",
        action="store_true",
        help="follow the job's state-change events on the stack's bus instead of polling its item "
        "(subscribes a temporary queue of its own)",
    )
    watch.add_argument("--event-bus", metavar="NAME", help="with --events: the bus (default: the stack's)")
    watch.set_defaults(handler=cmd_watch, command_parser=watch)

    get = commands.add_parser(
        "get",
        parents=common,
        help="download results/<job-id>/ into DIR/<job-id>/",
        description="Download a finished job's results/<job-id>/ (images and result.json, or error.json) "
        "into DIR/<job-id>/ and print each file's path.",
    )
    get.add_argument("job_id", metavar="JOB_ID")
    get.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="default: the current directory")
    get.add_argument(
        "--sheet",
        action="store_true",
        help="also write DIR/<job-id>/sheet.png: the parent with the mask outlined, and the four variants",
    )
    get.set_defaults(handler=cmd_get, command_parser=get)

    listing = commands.add_parser(
        "list",
        parents=common,
        help="recent jobs, newest first",
        description="Show the most recent jobs, newest first: id, status, percentage, creation time, task id.",
    )
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="at most N jobs (20)")
    listing.add_argument(
        "--status",
        type=str.upper,
        choices=[status.value for status in JobStatus],
        help="only jobs in this state",
    )
    listing.set_defaults(handler=cmd_list, command_parser=listing)

    status = commands.add_parser(
        "status",
        parents=common,
        help="the job's DynamoDB item as JSON",
        description="Print the job's DynamoDB item as JSON, without the pipeline's bookkeeping "
        "(claims, leases, index keys, TTL, the webhook secret's hash) unless --raw.",
    )
    status.add_argument("job_id", metavar="JOB_ID")
    status.add_argument("--raw", action="store_true", help="the whole item, bookkeeping included")
    status.set_defaults(handler=cmd_status, command_parser=status)

    usage = commands.add_parser(
        "usage",
        parents=common,
        help="credits reserved and spent today and this month, and jobs held for credits",
        description="Show today's and this month's (UTC) credits, reserved (counted against the limits), "
        "spent by finished jobs and still in flight, against the limits in force at the last reservation; "
        "then the jobs held for budget (BUDGET_EXCEEDED) or for the provider's balance (PROVIDER_BALANCE_LOW).",
    )
    usage.add_argument("--limit", type=int, default=20, metavar="N", help="list at most N held jobs (20)")
    usage.add_argument("--json", action="store_true", help="print it as JSON")
    usage.set_defaults(handler=cmd_usage, command_parser=usage)

    doctor = commands.add_parser(
        "doctor",
        parents=common,
        help="check a deployed stack end to end, without spending a credit",
        description="Check a deployed stack (--stack-name, default vary-region; or --local): its outputs, "
        "the API key (set, and accepted by APIFRAME's free account read), a probe job with a mask that is no "
        "image (inbox -> submit function -> REJECTED + error.json, then removed), its state-change event on "
        "the bus, an unsigned webhook refused with 401, and the alarm topic's subscribers. Exit 0 when no "
        "check failed, 1 otherwise.",
    )
    doctor.add_argument("--timeout", type=float, default=120.0, metavar="S", help="wait S seconds for the probe (120)")
    doctor.add_argument(
        "--webhook-url",
        metavar="URL",
        help="post the probe webhook under this base URL instead of the stack's WebhookUrl output (an emulator "
        "whose HTTP APIs answer at another address)",
    )
    doctor.set_defaults(handler=cmd_doctor, command_parser=doctor)

    from vary_region_cli.editor.command import add_parser as add_editor

    editor = add_editor(commands, common)
    editor.set_defaults(handler=cmd_editor, command_parser=editor)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Like parse_args, but an unknown option is reported with the usage of the command it was
    given to, not the top-level usage (argparse leaves unknown arguments to the top parser)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command_parser: argparse.ArgumentParser = getattr(args, "command_parser", parser)
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


# --- commands ----------------------------------------------------------------------------------


def _check_region_options(args: argparse.Namespace) -> None:
    parser: argparse.ArgumentParser = args.command_parser
    shapes = bool(args.rect or args.ellipse or args.polygon)
    if args.mask is not None and shapes:
        parser.error("argument --mask: not allowed with --rect, --ellipse or --polygon")
    if args.mask is None and not shapes:
        parser.error("one of the arguments --mask --rect --ellipse --polygon is required")
    if args.size and (args.ellipse or args.polygon):
        raise CliError("--size draws rectangles only: drop it, and the pipeline draws every shape at the parent's size")
    if args.mask_fit and shapes and not args.size:
        raise CliError(
            "--mask-fit is about a mask file (--mask, or --rect with --size): shapes are drawn at the parent's size"
        )


def cmd_submit(args: argparse.Namespace, target: Target) -> int:
    _check_region_options(args)
    mask: bytes | None = None
    mask_type = "image/png"
    regions: dict[str, Any] | None = None
    if args.rect and args.size:
        mask = rectangle_mask_png(parse_size(args.size), [Rect.parse(text) for text in args.rect])
    elif args.rect or args.ellipse or args.polygon:
        regions = region_document(args.rect or [], args.ellipse or [], args.polygon or [], args.units)
    else:
        if args.size:
            raise CliError("--size only goes with --rect")
        try:
            mask = args.mask.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the mask {args.mask}: {exc.strerror or exc}") from None
        mask_type = check_mask_file(mask, str(args.mask))
    metadata = jobs.parse_metadata(args.metadata)
    if args.aspect_ratio and not args.imagine:
        raise CliError("--aspect-ratio only goes with --imagine")
    if args.parent_task_id is not None and not args.parent_task_id.strip():
        raise CliError("--parent-task-id is empty")
    job_id = args.job_id if args.job_id is not None else jobs.new_job_id()
    if args.imagine:
        imagine = {"prompt": args.imagine, "index": args.index or "1"}
        document = jobs.job_document(None, args.prompt, metadata) | {
            "imagine": imagine | ({"aspect_ratio": args.aspect_ratio} if args.aspect_ratio else {})
        }
    else:
        document = jobs.job_document(args.parent_task_id.strip(), args.prompt, metadata)
        if args.index:
            document["index"] = args.index
    if regions is not None:
        document["mask"] = regions
    if args.mask_fit:
        document["mask_fit"] = args.mask_fit
    uploads = jobs.submit_job(target, job_id, document, mask, mask_type, inline=args.inline)
    for upload in uploads:
        _note(f"uploaded s3://{target.bucket}/{upload.key} ({upload.content_type}, {upload.size} bytes)")
    print(job_id, flush=True)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, target: Target) -> int:
    jobs.check_job_id(args.job_id)
    target.require_table()
    if args.interval <= 0 or (args.timeout is not None and args.timeout < 0):
        raise CliError("--interval must be positive and --timeout not negative")
    if args.events:
        from vary_region_cli.events import JobEvents, event_bus

        follower = JobEvents(target, args.job_id, event_bus(target, args.event_bus))
        try:
            result = jobs.watch_job_by_events(target, args.job_id, follower, timeout=args.timeout)
        finally:
            follower.close()
    else:
        result = jobs.watch_job(target, args.job_id, timeout=args.timeout, interval=args.interval)
    item = result.item or {}
    if result.status == "TIMEOUT":
        where = f"still {item.get('status')}" if item else "not picked up by the pipeline yet"
        waiting = result.waiting_for or jobs.held_note(item)
        if waiting:
            where += f", {waiting}"
        print(f"timed out after {result.elapsed:.0f}s: job {args.job_id} is {where}", flush=True)
        return EXIT_TIMEOUT
    if result.status == "COMPLETED":
        images = (item.get("result") or {}).get("images") or {}
        count = f"{len(images)} images" if images else "results"
        where = f"s3://{target.bucket}/{jobs.RESULTS}{args.job_id}/"
        print(f"COMPLETED: {count} in {where} (download: {PROG} get {shlex.quote(args.job_id)})", flush=True)
        return EXIT_OK
    error = item.get("error") or {}
    stage = f" [stage: {error['stage']}]" if error.get("stage") else ""
    print(f"{result.status}: {error.get('code', 'UNKNOWN')}: {error.get('message', '(no message)')}{stage}", flush=True)
    return EXIT_JOB_FAILED


def cmd_get(args: argparse.Namespace, target: Target) -> int:
    paths = jobs.download_results(target, args.job_id, args.out)
    for path in paths:
        print(path, flush=True)
    if any(path.name == "error.json" for path in paths):
        _note(f"job {args.job_id} did not complete: see error.json")
        return EXIT_OK
    if args.sheet:
        from vary_region_cli.sheet import SheetError, contact_sheet

        try:
            print(contact_sheet(args.out / args.job_id), flush=True)
        except SheetError as exc:
            raise CliError(str(exc)) from None
    return EXIT_OK


def cmd_list(args: argparse.Namespace, target: Target) -> int:
    if args.limit <= 0:
        raise CliError("--limit must be positive")
    items = jobs.list_jobs(target, args.limit, args.status)
    if not items:
        print("no jobs" + (f" with status {args.status}" if args.status else ""), flush=True)
        return EXIT_OK
    rows = [
        [
            str(item.get("job_id")),
            str(item.get("status", "?")),
            str(item["percentage"]) if item.get("percentage") is not None else "-",
            jobs.short_time(item.get("created_at")),
            str(item.get("task_id") or "-"),
        ]
        for item in items
    ]
    print(jobs.format_table(rows, ["JOB ID", "STATUS", "%", "CREATED (UTC)", "TASK ID"]), flush=True)
    return EXIT_OK


def cmd_usage(args: argparse.Namespace, target: Target) -> int:
    from vary_region_cli import usage

    if args.limit <= 0:
        raise CliError("--limit must be positive")
    report = usage.read_usage(target)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False), flush=True)
    else:
        print(usage.render(report, args.limit), flush=True)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, target: Target) -> int:
    from vary_region_cli import doctor

    if args.timeout <= 0:
        raise CliError("--timeout must be positive")
    if not target.local and not target.stack_name:
        target.stack_name = doctor.DEFAULT_STACK_NAME
    return EXIT_OK if doctor.run(target, args.timeout, webhook_url=args.webhook_url) else EXIT_JOB_FAILED


def cmd_editor(args: argparse.Namespace, target: Target) -> int:
    from vary_region_cli.editor.command import run

    return run(args, target)


def cmd_status(args: argparse.Namespace, target: Target) -> int:
    jobs.check_job_id(args.job_id)
    item = jobs.require_item(target, args.job_id)
    shown = item if args.raw else jobs.public_fields(item)
    print(json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False), flush=True)
    waiting = jobs.waiting_for(target, args.job_id, item) or jobs.held_note(item)
    if waiting:
        _note(f"job {args.job_id} is {item.get('status')}: {waiting}")
    return EXIT_OK


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    settings = CliSettings(
        bucket=args.bucket,
        table=args.table,
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
        stack_name=args.stack_name,
        local=bool(args.local),
        stack_file=args.stack_file,
    )
    target: Target | None = None
    try:
        target = resolve(settings_from_env(settings))
        handler: Callable[[argparse.Namespace, Target], int] = args.handler
        return handler(args, target)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vary-region list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (CliError, MaskError) as exc:
        return _fail(str(exc))
    except Exception as exc:  # AWS and OS errors: one readable line, never a traceback
        return _fail(describe_error(exc, target))


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_ERROR


def describe_error(exc: Exception, target: Target | None) -> str:
    from botocore import exceptions as boto

    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError):
        if target is not None and target.local:
            return (
                f"cannot reach {target.where}: is it running? Start it with `make local` "
                f"(or delete {target.stack_file} if it is left over from a stack that was killed)"
            )
        return str(exc)
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return "no AWS credentials found: configure a profile (--profile, AWS_PROFILE) or use --local"
    if isinstance(exc, boto.NoRegionError):
        return "no AWS region configured: pass --region or set AWS_REGION"
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", "")
        operation = getattr(exc, "operation_name", "request")
        if code in ("NoSuchBucket",) and target is not None:
            return f"bucket {target.bucket} does not exist ({target.where})"
        if code == "ResourceNotFoundException" and target is not None and operation in ("GetItem", "Scan"):
            return f"table {target.table} does not exist ({target.where})"
        if code == "ValidationError" and operation == "DescribeStacks" and target is not None:
            return f"CloudFormation stack {target.stack_name} not found: {message}"
        return f"{operation} failed: {code}: {message}".rstrip(": ")
    if isinstance(exc, boto.BotoCoreError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
