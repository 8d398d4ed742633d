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
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto takes any
STACK_FILE_KEYS = ("aws_endpoint_url", "region", "bucket", "table")


class CliError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""


@dataclass
class Settings:
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

    def require_bucket(self) -> str:
        if not self.bucket:
            self._from_cloudformation()
        if not self.bucket:
            raise CliError(
                "no bucket configured: pass --bucket (or set VARY_REGION_BUCKET), --stack-name, "
                "or start the local stack (`make local`) and use --local"
            )
        return self.bucket

    def require_table(self) -> str:
        if not self.table:
            self._from_cloudformation()
        if not self.table:
            raise CliError(
                "no table configured: pass --table (or set VARY_REGION_TABLE), --stack-name, "
                "or start the local stack (`make local`) and use --local"
            )
        return self.table

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


def settings_from_env(settings: Settings, environ: Mapping[str, str] = os.environ) -> Settings:
    """Environment fallbacks for what the options left open (boto3 reads AWS_* itself)."""
    explicitly_local = settings.local or settings.stack_file is not None
    if not explicitly_local:  # with --local the stack file wins over a VARY_REGION_BUCKET meant for AWS
        settings.bucket = settings.bucket or environ.get("VARY_REGION_BUCKET") or None
        settings.table = settings.table or environ.get("VARY_REGION_TABLE") or None
        settings.stack_name = settings.stack_name or environ.get("VARY_REGION_STACK_NAME") or None
    return settings


def resolve(settings: Settings) -> Target:
    """--local or --stack-file: use the local stack. Neither, and no bucket, table, stack name or
    endpoint from anywhere: use the local stack if its stack.json exists. Otherwise: AWS (or --endpoint-url)."""
    stack_file = settings.stack_file or DEFAULT_STACK_FILE
    explicitly_local = settings.local or settings.stack_file is not None
    chose_aws = any((settings.bucket, settings.table, settings.stack_name, settings.endpoint_url))
    use_local = explicitly_local or (not chose_aws and stack_file.is_file())
    if not use_local:
        return Target(
            bucket=settings.bucket,
            table=settings.table,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            profile=settings.profile,
            local=False,
            stack_name=settings.stack_name,
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
    if not path.is_file():
        raise CliError(f"no local stack: {path} does not exist (start one with `make local` or `vary-region-local`)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"cannot read the local stack file {path}: {exc}") from None
    missing = [key for key in STACK_FILE_KEYS if not isinstance(info, dict) or not info.get(key)]
    if missing:
        raise CliError(f"the local stack file {path} lacks {', '.join(missing)}")
    return info
