"""`vary-region editor`: read the parent picture, serve the page, open the browser, wait for "done"."""

from __future__ import annotations

import argparse
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vary_region_cli.config import CliError, Target
from vary_region_cli.editor import sources
from vary_region_cli.editor.server import EditorServer
from vary_region_cli.editor.session import EditorSession


def add_parser(commands: Any, common: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    editor = commands.add_parser(
        "editor",
        parents=list(common),
        help="paint the mask on the parent image in your browser, then submit or save the job",
        description="Serve a mask editor on 127.0.0.1 (a random token in its URL) and open it in the browser. "
        "Submit uploads the job as `submit` does and prints its id; Save writes mask.png and job.json into "
        "--out. The server stops when the page says Done, or on Ctrl-C.",
    )
    source = editor.add_mutually_exclusive_group(required=True)
    source.add_argument("--parent", metavar="TASK_ID", help="the upscale task whose image is edited")
    source.add_argument("--job", metavar="JOB_ID", help="a COMPLETED job: edit one of its variants (with --image)")
    source.add_argument("--file", type=Path, metavar="PATH", help="a local picture (PNG, JPEG or WebP)")
    editor.add_argument("--image", choices=sources.RESULT_IMAGES, help="with --job: which variant, 1-4")
    editor.add_argument("--out", type=Path, metavar="DIR", help="where Save writes mask.png and job.json")
    editor.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: any free one)")
    editor.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    return editor


def run(args: argparse.Namespace, target: Target) -> int:
    if (args.job is None) != (args.image is None):
        raise CliError("--job and --image go together: --job JOB_ID --image N")
    if args.parent is not None:
        parent = sources.from_task(target, args.parent)
    elif args.job is not None:
        parent = sources.from_job(target, args.job, args.image)
    else:
        parent = sources.from_file(args.file)
    if not 0 <= args.port <= 65535:
        raise CliError("--port must be 0..65535")
    server = EditorServer(EditorSession(parent, target, args.out), args.port)
    try:
        server.serve_in_background()
        print(f"mask editor for {parent.label} ({parent.width}x{parent.height}): {server.url}", file=sys.stderr)
        print("Done on the page, or Ctrl-C here, stops it.", file=sys.stderr, flush=True)
        if not args.no_browser:
            webbrowser.open(server.url)
        while not server.done.wait(0.5):  # a short wait: Ctrl-C is delivered between waits
            pass
    finally:
        server.shutdown()
        server.server_close()
    return 0
