"""Where the jobs live: bucket, table and AWS connection, from options, the environment, a
CloudFormation stack's outputs, or the local stack's `.local/stack.json`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

DEFAULT_STACK_FILE = Path(".local") / "stack.json"
MAX_STACK_FILE_BYTES = 1024 * 1024  # a stack file is a few hundred bytes; never read a device for ever
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto takes any
STACK_FILE_KEYS = ("aws_endpoint_url", "region", "bucket", "table")


class CliError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""


@dataclass
class CliSettings:
    """What the user chose (options first, then the environment); `resolve()` fills the rest."""

    bucket: str | None = None
    table: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    stack_name: str | None = None
    local: bool = False
    stack_file: Path | None = None


@dataclass
class Target:
    """A resolved place to talk to, with lazily created boto3 clients."""

    bucket: str | None
    table: str | None
    endpoint_url: str | None
    region: str | None
    profile: str | None
    local: bool
    stack_file: Path | None = None
    stack_name: str | None = None
    stack_info: dict[str, Any] = field(default_factory=dict)
    searched_from: Path | None = None  # where the search for .local/stack.json started, when it found none

    def require_bucket(self) -> str:
        if not self.bucket:
            self._from_cloudformation()
        if not self.bucket:
            raise CliError(
                "no bucket configured: pass --bucket (or set VARY_REGION_BUCKET) or --stack-name, "
                f"or start the local stack (`make local`){self._search_note()}"
            )
        return self.bucket

    def require_table(self) -> str:
        if not self.table:
            self._from_cloudformation()
        if not self.table:
            raise CliError(
                "no table configured: pass --table (or set VARY_REGION_TABLE) or --stack-name, "
                f"or start the local stack (`make local`){self._search_note()}"
            )
        return self.table

    def _search_note(self) -> str:
        if self.searched_from is None:
            return ""
        return f" ({not_found_note(self.searched_from)}; --stack-file FILE names a local stack's file)"

    @property
    def where(self) -> str:
        if self.local:
            return f"the local stack at {self.endpoint_url} (from {self.stack_file})"
        return self.endpoint_url or "AWS"

    @cached_property
    def session(self) -> Any:
        import boto3

        credentials = LOCAL_CREDENTIALS if self.local and not self.profile else {}
        return boto3.Session(profile_name=self.profile, region_name=self.region, **credentials)

    def client(self, service: str) -> Any:
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": 2 if self.local else 4},
            connect_timeout=3 if self.local else 10,
            read_timeout=30,
            s3={"addressing_style": "path"} if self.local else None,
        )
        return self.session.client(service, endpoint_url=self.endpoint_url, config=config)

    @cached_property
    def s3(self) -> Any:
        return self.client("s3")

    @cached_property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    def _from_cloudformation(self) -> None:
        """Fill bucket and table from the outputs of the stack that `sam deploy` created."""
        if not self.stack_name or self.stack_info:
            return
        stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        self.stack_info = outputs
        self.bucket = self.bucket or outputs.get("JobsBucketName")
        self.table = self.table or outputs.get("JobsTableName")


def settings_from_env(settings: CliSettings, environ: Mapping[str, str] = os.environ) -> CliSettings:
    """Environment fallbacks for what the options left open (boto3 reads AWS_* itself)."""
    explicitly_local = settings.local or settings.stack_file is not None
    if not explicitly_local:  # with --local the stack file wins over a VARY_REGION_BUCKET meant for AWS
        settings.bucket = settings.bucket or environ.get("VARY_REGION_BUCKET") or None
        settings.table = settings.table or environ.get("VARY_REGION_TABLE") or None
        settings.stack_name = settings.stack_name or environ.get("VARY_REGION_STACK_NAME") or None
    return settings


def find_stack_file(start: Path) -> Path | None:
    """The nearest .local/stack.json in `start` or one of its parents, as git finds .git: the CLI
    then works from any folder of the repository that runs `make local`."""
    for folder in (start, *start.parents):
        candidate = folder / DEFAULT_STACK_FILE
        if candidate.is_file():
            return candidate
    return None


def not_found_note(start: Path) -> str:
    return f"no {DEFAULT_STACK_FILE} in {start} or any folder above it"


def resolve(settings: CliSettings, cwd: Path | None = None) -> Target:
    """--local or --stack-file: use the local stack. Neither, and no bucket, table, stack name or
    endpoint from anywhere: use the local stack if a .local/stack.json is found (here or in a
    parent folder). Otherwise: AWS (or --endpoint-url)."""
    start = (cwd or Path.cwd()).resolve()
    explicitly_local = settings.local or settings.stack_file is not None
    chose_aws = any((settings.bucket, settings.table, settings.stack_name, settings.endpoint_url))
    stack_file = settings.stack_file
    if stack_file is None and (explicitly_local or not chose_aws):
        stack_file = find_stack_file(start)
        if stack_file is None and explicitly_local:
            raise CliError(
                f"no local stack: {not_found_note(start)} (start one with `make local` in the repository, "
                "or name its stack file with --stack-file FILE)"
            )
    use_local = explicitly_local or (not chose_aws and stack_file is not None)
    if not use_local or stack_file is None:
        return Target(
            bucket=settings.bucket,
            table=settings.table,
            endpoint_url=settings.endpoint_url,
            # boto3 reads only AWS_DEFAULT_REGION; AWS_REGION is what Lambda, the AWS CLI v2 and the
            # other SDKs read, and what the docs tell users to set.
            region=settings.region or os.environ.get("AWS_REGION") or None,
            profile=settings.profile,
            local=False,
            stack_name=settings.stack_name,
            searched_from=None if chose_aws else start,
        )
    info = load_stack_file(stack_file)
    return Target(
        bucket=settings.bucket or info["bucket"],
        table=settings.table or info["table"],
        endpoint_url=settings.endpoint_url or info["aws_endpoint_url"],
        region=settings.region or info["region"],
        profile=settings.profile,
        local=True,
        stack_file=stack_file,
        stack_info=info,
    )


def load_stack_file(path: Path) -> dict[str, Any]:
    """The local stack's description, or a CliError that says what is wrong with the file."""
    if not path.exists():
        raise CliError(f"no local stack: {path} does not exist (start one with `make local` or `vary-region-local`)")
    expected = f"expected the JSON that `make local` writes to {DEFAULT_STACK_FILE}"
    if path.is_dir():
        raise CliError(f"{path} is a folder, not a local stack file ({expected})")
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_STACK_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read the local stack file {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise CliError(f"{path} is not a local stack file: it is empty ({expected})")
    if len(raw) > MAX_STACK_FILE_BYTES:
        raise CliError(f"{path} is not a local stack file: it is larger than {MAX_STACK_FILE_BYTES} bytes ({expected})")
    try:
        info = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CliError(f"{path} is not a local stack file: it is not UTF-8 text ({expected})") from None
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path} is not a local stack file: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; "
            f"{expected})"
        ) from None
    if not isinstance(info, dict):
        raise CliError(f"{path} is not a local stack file: it holds a JSON {type(info).__name__}, not an object")
    missing = [key for key in STACK_FILE_KEYS if not info.get(key)]
    if missing:
        raise CliError(f"the local stack file {path} lacks {', '.join(missing)} ({expected})")
    return info
