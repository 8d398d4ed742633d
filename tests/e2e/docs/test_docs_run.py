"""The manual runs: every example file and every shell block of README.md and docs/ against one local
stack, started as `make local` starts it, from a work folder laid out like the repository's root
(`examples/`, `.venv/`, and `.local/` holding the stack's stack.json), as a reader follows the pages.

A block that cannot run here says so in the page (blocks.py: `<!-- docs-test: skip (why) -->`);
any other block runs, so a new one that cannot is a failure, not a silent gap. The docs' fixed
ports and `make demo` are the only things put in: SUBSTITUTIONS and COMMANDS below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.e2e.conftest import REPO_ROOT, StackProcess, user_env
from tests.e2e.docs.blocks import Bindings, Block, Command, placeholders, read_blocks, uses_aws_cli
from tests.support.waits import read_error_json, wait_for_job, wait_for_object

pytestmark = [pytest.mark.e2e, pytest.mark.fixed_generation]  # the pages show a v1 stack, as `make local` starts

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
BLOCKS = [block for page in PAGES for block in read_blocks(page)]
COMMAND_TIMEOUT = 60.0

# What the pages fix and this stack cannot: the default ports of `make local` (this stack's are
# free ports), by the stack.json key that holds the real URL.
SUBSTITUTIONS = {"http://127.0.0.1:4566": "aws_endpoint_url", "http://127.0.0.1:4590": "apiframe_base_url"}
# A whole command, run as what it runs: `make demo` defaults to the repository's own .local/ and
# demo-output/, here the work folder's.
COMMANDS = {"make demo": ".venv/bin/python -m vary_region_local.demo --state-dir .local --out demo-output"}
# docs/cli.md's exit codes: what `watch` ends with when the job did not complete.
EXIT_CODES = {"REJECTED: ": 1, "FAILED: ": 1, "timed out after ": 2}


@dataclass(frozen=True)
class Example:
    """An example job file, how the pages say it is sent, and where they say it ends."""

    files: dict[str, str]  # key under inbox/<job-id>/ -> file under examples/
    status: str
    error_code: str | None = None
    placeholders: tuple[tuple[str, str], ...] = ()  # what the page says to put in, locally


EXAMPLES = {
    # docs/local-stack.md, "Driving it by hand": with its mask, COMPLETED.
    "job.json": Example({"job.json": "job.json", "mask.png": "mask.png"}, "COMPLETED"),
    # docs/job-format.md and docs/deploy.md: the whole chain from a prompt; runs anywhere.
    "job-from-prompt.json": Example({"job.json": "job-from-prompt.json"}, "COMPLETED"),
    # docs/local-stack.md, "The APIFRAME simulator": with `grid-1` as the parent, REJECTED.
    "job-from-grid.json": Example(
        {"job.json": "job-from-grid.json"}, "REJECTED", "MASK_REGIONS_INVALID", (("<an imagine task id>", "grid-1"),)
    ),
}


@dataclass
class Reader:
    """The reader's terminal: the work folder, the environment, the running stack."""

    folder: Path
    env: dict[str, str]
    stack: StackProcess
    bindings: dict[Path, Bindings]

    def prepare(self, text: str) -> str:
        for shown, key in SUBSTITUTIONS.items():
            text = text.replace(shown, self.stack.info[key])
        return text

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=COMMAND_TIMEOUT,
            cwd=self.folder,
            env=self.env,
            check=False,
        )


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    folder = tmp_path_factory.mktemp("repository")
    (folder / "examples").symlink_to(REPO_ROOT / "examples")
    (folder / ".venv").symlink_to(sys.prefix)  # `make venv`'s .venv: this interpreter's
    env = user_env(tmp_path_factory.mktemp("home"))
    env.pop("APIFRAME_API_VERSION", None)  # `make local`: v1 unless asked
    stack = StackProcess(folder / ".local", env)  # `make local` writes .local/stack.json here
    info = stack.start()
    # `source .venv/bin/activate`, as docs/cli.md's examples assume, and docs/local-stack.md's
    # credentials; any AWS call a page makes without --endpoint-url reaches this stack, never AWS.
    env |= {
        "PATH": f"{sys.prefix}/bin{os.pathsep}{env.get('PATH', '')}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": info["region"],
        "AWS_ENDPOINT_URL": info["aws_endpoint_url"],
    }
    yield Reader(folder, env, stack, {})
    stack.stop()


def test_every_example_file_reaches_the_state_its_page_names(reader: Reader) -> None:
    # examples/stepfunctions/ is a workflow, not a job file: tests/e2e/test_step_functions.py runs it.
    on_disk = {path.name for path in (REPO_ROOT / "examples").iterdir() if path.is_file()}
    sent = {name for example in EXAMPLES.values() for name in example.files.values()}
    assert on_disk == sent, f"examples/ and the examples this test sends differ: {sorted(on_disk ^ sent)}"
    info = reader.stack.info
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=info["region"])
    s3 = session.client("s3", endpoint_url=info["aws_endpoint_url"])
    table = session.resource("dynamodb", endpoint_url=info["aws_endpoint_url"]).Table(info["table"])
    jobs = {}
    for name, example in EXAMPLES.items():
        job_id = "example-" + name.removesuffix(".json")
        for key, file in sorted(example.files.items(), key=lambda pair: pair[0] == "job.json"):  # job.json last
            body = (REPO_ROOT / "examples" / file).read_bytes()
            for shown, real in example.placeholders:
                body = body.replace(shown.encode(), real.encode())
            s3.put_object(Bucket=info["bucket"], Key=f"inbox/{job_id}/{key}", Body=body)
        jobs[name] = job_id
    for name, example in EXAMPLES.items():
        item = wait_for_job(table, jobs[name], timeout=45)
        assert item.get("status") == example.status, f"examples/{name}: {item}"
        if example.error_code is None:
            result = json.loads(wait_for_object(s3, info["bucket"], f"results/{jobs[name]}/result.json"))
            assert result.get("status") == example.status, f"examples/{name}: result.json {result}"
        else:
            assert (item.get("error") or {}).get("code") == example.error_code, f"examples/{name}: {item}"
            error = read_error_json(s3, info["bucket"], jobs[name]).get("error") or {}
            assert error.get("code") == example.error_code, f"examples/{name}: error.json {error}"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where(REPO_ROOT) for block in BLOCKS])
def test_every_shell_block_of_the_manual_runs(reader: Reader, block: Block) -> None:
    if block.verb == "skip":
        pytest.skip(f"the page says: {block.reason}")
    if uses_aws_cli(block.text) and shutil.which("aws", path=reader.env["PATH"]) is None:
        pytest.skip("the AWS CLI is not installed")
    bindings = reader.bindings.setdefault(block.page, Bindings())
    if not block.is_console:
        _run_and_check(reader, block.text, 0, None, bindings, block.where(REPO_ROOT))
        return
    commands = block.commands()
    assert commands, f"{block.where(REPO_ROOT)}: a console block with no `$ ` command: mark it (skip, and why)"
    for command in commands:
        _run_command(reader, command, bindings, f"{block.page.relative_to(REPO_ROOT)}:{command.line}")


def _run_command(reader: Reader, command: Command, bindings: Bindings, where: str) -> None:
    key_line = command.key_line
    expected = next((code for start, code in EXIT_CODES.items() if key_line and key_line.startswith(start)), 0)
    text = COMMANDS.get(command.text.strip(), command.text)
    _run_and_check(reader, text, expected, key_line, bindings, where)


def _run_and_check(
    reader: Reader, text: str, expected: int, key_line: str | None, bindings: Bindings, where: str
) -> None:
    script = reader.prepare(bindings.apply(text))
    assert not placeholders(script), f"{where}: put a real value for {placeholders(script)} (SUBSTITUTIONS)"
    try:
        result = reader.run(script)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{where}: still running after {COMMAND_TIMEOUT:.0f}s:\n{script}\n{exc.output}")
    output = result.stdout
    assert result.returncode == expected, f"{where}: exit code {result.returncode}, not {expected}:\n{script}\n{output}"
    if key_line is not None:
        assert bindings.match_key_line(key_line, output), f"{where}: no line like\n  {key_line}\nin\n{output}"
