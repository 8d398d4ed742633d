"""`make demo`: one Vary Region job through the local stack, the way a user runs it.

Starts the local stack as a separate process (`python -m vary_region_local.stack`, log in
.local/stack.log), then uses only the `vary-region` CLI (S3 and DynamoDB over HTTP) to submit a
chained job from a prompt (imagine -> upscale-1x -> inpaint) with its region given as a rectangle
in fractions, watch each stage, and download the results into demo-output/<job-id>/ with their
contact sheet. It checks that only the masked region changed (against the parent.png and mask.png
the pipeline stored), and stops the stack again, also when something fails.

A stack whose credit budget has no room for the chain would hold the job (or reject it) until the
budget's next period: the demo says so, and how to go on, before it submits anything.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vary_region_cli import main as cli
from vary_region_cli.config import CliSettings, resolve
from vary_region_cli.jobs import RESULTS
from vary_region_cli.masks import Rect

from vary_region_local.process import (
    STACK_START_TIMEOUT,
    StackProcess,
    StackProcessError,
    read_stack_file,
    requested_api_version,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGINE_PROMPT = "mountains under a morning sky"
INDEX = "2"
ASPECT_RATIO = "3:2"  # the simulator's 3:2 pictures are 512x344: not square, as real ones rarely are
PROMPT = "a hot air balloon"
RECT = "0.35,0.08,0.3,0.5"  # X,Y,W,H in fractions of the upscale: a tall box in the sky


class DemoError(Exception):
    pass


class LocalStackProcess(StackProcess):
    """The demo's stack: its own session, so Ctrl-C reaches the demo, which then stops the stack."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, own_session=True)

    def start(self, timeout: float = STACK_START_TIMEOUT) -> dict[str, Any]:
        try:
            return super().start(timeout)
        except StackProcessError as exc:
            raise DemoError(str(exc)) from None


def stack_is_alive(info: dict[str, Any]) -> bool:
    endpoint = urlsplit(str(info.get("aws_endpoint_url", "")))
    try:
        with socket.create_connection((endpoint.hostname or "127.0.0.1", endpoint.port or 80), timeout=0.5):
            return True
    except OSError:
        return False


def budget_problem(stack_file: Path, info: dict[str, Any], *, started_here: bool) -> str | None:
    """Why the stack's credit budget cannot take the demo's chain now, and how to go on; None: it can.

    The limits and prices are the stack's own (stack.json's `budget`), the credits reserved today
    and this month the ledger's (what `vary-region usage` shows)."""
    from vary_region.settings import GENERATIONS
    from vary_region_cli.usage import read_usage

    usage = read_usage(resolve(CliSettings(stack_file=stack_file)))
    budget = info.get("budget") or {}  # a stack.json from before it: the ledger's last limits, default prices
    prices = budget.get("credits") or {}
    chain = sum(prices.values()) if prices else sum(GENERATIONS[info.get("apiframe_api_version", "v1")][1])
    if started_here:
        restart = "run it again as"
        command = "make demo"
    else:
        restart = "stop that stack (Ctrl-C where `make local` runs) and start it again as"
        command = "make local"
    # The month first: when both periods are full, the job waits for the month's end.
    for usage_of in sorted(usage.periods, key=lambda u: u.period.next_opens, reverse=True):
        kind = str(usage_of.period.kind)
        adjective = "daily" if kind == "day" else "monthly"
        limit = int(budget.get(f"{adjective}_credit_limit", usage_of.limit))
        if not limit:
            continue
        setting = f"{adjective.upper()}_CREDIT_LIMIT"
        higher = f"`{setting}={max(2 * limit, 10 * chain)} {command}` (0: no limit)"
        what = f"the demo's chain (imagine, upscale-1x, inpaint) costs {chain} credits"
        if chain > limit:
            return (
                f"{what}, more than the whole {adjective} limit of {limit} ({setting}): its job would be REJECTED "
                f"(BUDGET_EXCEEDED). Nothing was submitted. To go on, {restart} {higher}"
            )
        if usage_of.reserved + chain > limit:
            opens = f"{usage_of.period.next_opens:%Y-%m-%dT%H:%M:%SZ}"
            held = sum(1 for job in usage.held if job.reason == "BUDGET_EXCEEDED")
            queue = f"; {held} job{'s are' if held != 1 else ' is'} held for the budget already" if held else ""
            fate = "REJECTED" if budget.get("over_budget") == "reject" else f"held until {opens}"
            return (
                f"the local stack's credit budget is spent: this UTC {kind}'s limit ({setting}) is {limit} credits, "
                f"{usage_of.reserved} are reserved, and {what}{queue}. Its job would be {fate} (BUDGET_EXCEEDED). "
                f"Nothing was submitted. To go on, wait until {opens}, when the next UTC {kind}'s budget opens; "
                f"or {restart} {higher}: a new stack's ledger starts empty"
            )
    return None


def shown_path(path: Path) -> Path:
    with contextlib.suppress(ValueError):
        return path.resolve().relative_to(Path.cwd().resolve())
    return path


class Cli:
    """Runs `vary-region` commands in-process and shows them as a user would type them."""

    def __init__(self, stack_file: Path) -> None:
        self.stack_file = stack_file
        default = (Path.cwd() / ".local" / "stack.json").resolve()
        shown = ["--stack-file", str(shown_path(stack_file))]
        self.shown_globals = ["--local"] if stack_file.resolve() == default else shown

    def run(self, *args: str, capture: bool = False) -> tuple[int, str]:
        print(f"\n$ vary-region {shlex.join([*self.shown_globals, *args])}", flush=True)
        argv = ["--stack-file", str(self.stack_file), *args]
        if not capture:
            return cli.main(argv), ""
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = cli.main(argv)
        print(buffer.getvalue(), end="", flush=True)
        return code, buffer.getvalue()


def mask_box(folder: Path) -> Rect:
    """The white box of the mask the pipeline sent (results/<job-id>/mask.png)."""
    from PIL import Image

    box = Image.open(folder / "mask.png").convert("L").getbbox()
    if box is None:
        raise DemoError("mask.png is all black")
    return Rect(box[0], box[1], box[2] - box[0], box[3] - box[1])


def check_only_mask_changed(folder: Path, rect: Rect) -> str:
    """Compare 1.png..4.png with parent.png pixel by pixel (Pillow: a dev dependency, demo only)."""
    from PIL import Image, ImageChops

    parent = Image.open(folder / "parent.png").convert("RGB")
    for name in ("1.png", "2.png", "3.png", "4.png"):
        image = Image.open(folder / name).convert("RGB")
        if image.size != parent.size:
            raise DemoError(f"{name} is {image.size}, the parent is {parent.size}")
        box = ImageChops.difference(parent, image).getbbox()
        if box is None:
            raise DemoError(f"{name} is identical to the parent: the masked region was not redrawn")
        left, top, right, bottom = box
        inside = left >= rect.x and top >= rect.y and right <= rect.x + rect.width and bottom <= rect.y + rect.height
        if not inside:
            raise DemoError(f"{name} differs from the parent outside the mask: changed box {box}, mask {rect}")
    return (
        f"check: 1.png..4.png vs parent.png: masked region changed, rest identical "
        f"(every changed pixel lies inside X,Y,W,H = {rect})"
    )


def run_demo(state_dir: Path, out_dir: Path, job_timeout: float) -> int:
    started = time.monotonic()
    stack = LocalStackProcess(state_dir)
    failure: str | None = None
    try:
        info, started_here = _use_or_start_stack(stack, started)
        run = Cli(stack.stack_file)
        problem = budget_problem(stack.stack_file, info, started_here=started_here)
        if problem is not None:
            run.run("usage")  # what the user would look at: the periods and the jobs held for credits
            raise DemoError(problem)
        job_id = _run_chain(run, out_dir, job_timeout)
        _show_results(out_dir / job_id, info, job_id)
    except KeyboardInterrupt:
        failure = "interrupted"
    except DemoError as exc:
        failure = str(exc)
    except Exception as exc:  # the demo must always stop its stack and say what happened
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if stack.process is not None:
            stopped_with = stack.stop()
            if stopped_with == 0 and not stack.stack_file.exists():
                print("\nStopped the local stack (exit code 0).")
            else:
                print(f"\nThe local stack did not stop cleanly (exit code {stopped_with}).")
                failure = failure or f"the local stack exited with code {stopped_with}"
    elapsed = time.monotonic() - started
    if failure:
        tail = stack.log_tail()
        if tail and stack.process is not None:
            print(f"\n--- last lines of {shown_path(stack.log_path)} ---\n{tail}\n---", file=sys.stderr)
        print(f"\nDemo FAILED after {elapsed:.1f}s: {failure}", file=sys.stderr)
        return 130 if failure == "interrupted" else 1
    print(f"Demo finished in {elapsed:.1f}s.")
    return 0


def _use_or_start_stack(stack: LocalStackProcess, started: float) -> tuple[dict[str, Any], bool]:
    """The stack's info, and whether the demo started it (a running simulator stack of the same
    APIFRAME generation is used as it is)."""
    info = read_stack_file(stack.stack_file)
    if info is None or not stack_is_alive(info):
        print(f"Starting the local stack: python -m vary_region_local.stack (log: {shown_path(stack.log_path)})")
        info = stack.start()
        print(
            f"  ready in {time.monotonic() - started:.1f}s: AWS (moto) {info['aws_endpoint_url']}, "
            f"APIFRAME {info['apiframe_api_version']} simulator {info['apiframe_base_url']}, "
            f"webhook {info['webhook_url']}",
            flush=True,
        )
        return info, True
    if not info.get("simulator"):
        raise DemoError(
            f"a local stack that talks to a real APIFRAME server is running ({stack.stack_file}); "
            "the demo runs on the simulator only: stop that stack first"
        )
    wanted = requested_api_version()
    running = info.get("apiframe_api_version", "v1")  # a stack.json of before v2 is a v1 stack
    if running != wanted:
        raise DemoError(
            f"a local stack speaking APIFRAME {running} is running ({stack.stack_file}); "
            f"stop it first, or run the demo with APIFRAME_API_VERSION={running}"
        )
    print(f"Using the local stack that is already running ({shown_path(stack.stack_file)}).")
    return info, False


def _run_chain(run: Cli, out_dir: Path, job_timeout: float) -> str:
    """Submit the demo's chain through the CLI, watch it, fetch its results: the job's id."""
    code, output = run.run(
        "submit",
        "--imagine",
        IMAGINE_PROMPT,
        "--index",
        INDEX,
        "--aspect-ratio",
        ASPECT_RATIO,
        "--prompt",
        PROMPT,
        "--rect",
        RECT,
        "--units",
        "fraction",
        "--metadata",
        json.dumps({"source": "make demo"}),
        capture=True,
    )
    if code != 0 or not output.strip():
        raise DemoError(f"submit failed (exit code {code})")
    job_id = output.strip().splitlines()[-1]

    code, _ = run.run("watch", job_id, "--timeout", f"{job_timeout:g}")
    if code != 0:
        raise DemoError(f"the job did not complete (watch exit code {code})")

    out_arg = str(shown_path(out_dir))
    code, _ = run.run("get", job_id, "--out", out_arg, "--sheet")
    if code != 0:
        raise DemoError(f"get failed (exit code {code})")

    code, _ = run.run("list", "--limit", "5")
    if code != 0:
        raise DemoError(f"list failed (exit code {code})")

    code, _ = run.run("usage")  # the chain's 10 credits, in today's and this month's ledger
    if code != 0:
        raise DemoError(f"usage failed (exit code {code})")
    return job_id


def _show_results(folder: Path, info: dict[str, Any], job_id: str) -> None:
    print()
    print(check_only_mask_changed(folder, mask_box(folder)))
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    for task in result.get("tasks", []):
        print(f"result.json: stage {task['stage']:<8} task {task['task_id']}  {task['credits']} credits")
    print(
        f"result.json: {len(result['images'])} images under s3://{info['bucket']}/{RESULTS}{job_id}/, "
        f"metadata {json.dumps(result['metadata'])}"
    )
    print(f"open {shown_path(folder)}/sheet.png: the parent with the mask outlined, then the four variants")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind through the finally that stops the stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vary_region_local.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=REPO_ROOT / ".local",
        help="where the stack writes stack.json and stack.log (default: .local)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "demo-output", help="results go to OUT/<job-id>/ (default: demo-output)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the job (60)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    return run_demo(args.state_dir, args.out, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
