"""Where the editor's parent image comes from: a task id (read as the pipeline reads parents), a
finished job's result image, or a local file. Only these three: the page never names a URL."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vary_region.core.errors import JobRejected
from vary_region.settings import DEFAULT_IMAGE_HOSTS, ImageOrigin

from vary_region_cli import jobs
from vary_region_cli.config import CliError, Target

MAX_IMAGE_BYTES = 50 * 1024 * 1024  # the pipeline's MAX_IMAGE_BYTES default
IMAGE_TIMEOUT_SECONDS = 20.0
RESULT_IMAGES = ("1", "2", "3", "4")
_MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ParentImage:
    """The picture the mask is painted on, and what the submitted job names as its parent."""

    data: bytes
    media_type: str
    width: int
    height: int
    label: str  # shown on the page: where the picture came from
    parent_task_id: str | None  # None: a local file, which can be saved but not submitted
    index: str | None = None  # a job's variant: the job upscales image N of the grid first


def from_file(path: Path) -> ParentImage:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _decoded(data, f"file {path.name}", None)


def from_job(target: Target, job_id: str, image: str) -> ParentImage:
    """Variant N of a finished job: its results/<job-id>/N.png; the next job upscales that image of
    the job's grid (parent_task_id = the job's task, index = N), as `submit --index` does."""
    jobs.check_job_id(job_id)
    if image not in RESULT_IMAGES:
        raise CliError("--image must be 1, 2, 3 or 4")
    item = jobs.require_item(target, job_id)
    if item.get("status") != "COMPLETED" or not item.get("task_id"):
        raise CliError(f"job {job_id!r} is {item.get('status')}: only a COMPLETED job's images can be edited")
    key = f"{jobs.RESULTS}{job_id}/{image}.png"
    body = target.s3.get_object(Bucket=target.require_bucket(), Key=key)["Body"]
    data = body.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise CliError(f"s3://{target.bucket}/{key} is larger than {MAX_IMAGE_BYTES} bytes")
    return _decoded(data, f"image {image} of job {job_id}", str(item["task_id"]), index=image)


def from_task(target: Target, task_id: str) -> ParentImage:
    """The parent as the submit function reads it: Fetch (free) with the stack's key, then its image
    under the stack's image-host allowlist and pinned connection (vary_region.submit.parent)."""
    from vary_region.image_hosts.pinned_http import pinned_session, read_prefix
    from vary_region.image_hosts.url_policy import check_image_url
    from vary_region.submit.parent import ParentNotReady

    task_id = task_id.strip()
    if not task_id:
        raise CliError("--parent is empty")
    reader, origins = _parent_reader(target)
    try:
        parent = reader.read(task_id)
        checked = check_image_url(parent.image_url, origins)
        kept: list[bytes] = []

        def keep(head: bytes) -> None:
            # read_prefix stops when this answers; never answering reads the whole (bounded) body.
            kept[:] = [head]

        session, adapter = pinned_session(pool_maxsize=1)
        _, read = read_prefix(
            session, adapter, checked, keep, max_bytes=MAX_IMAGE_BYTES + 1, timeout=IMAGE_TIMEOUT_SECONDS
        )
    except JobRejected as exc:
        raise CliError(f"{exc.error.message} ({exc.error.code})") from None
    except ParentNotReady as exc:
        raise CliError(f"the parent cannot be read now: {exc} ({exc.reason})") from None
    except Exception as exc:  # the URL policy's and the download's refusals, in one line
        raise CliError(f"the parent image of task {task_id} cannot be read: {exc}") from None
    if read > MAX_IMAGE_BYTES:
        raise CliError(f"the parent image of task {task_id} is larger than {MAX_IMAGE_BYTES} bytes")
    return _decoded(kept[0] if kept else b"", f"task {task_id}", task_id)


def _parent_reader(target: Target) -> tuple[Any, tuple[ImageOrigin, ...]]:
    from vary_region.provider.apiframe_v1 import ApiframeClient, RetryPolicy
    from vary_region.submit.parent import ParentReader

    from vary_region_cli.doctor import read_facts

    check, facts = read_facts(target)
    if facts is None:
        raise CliError(f"{check.reason}; {check.fix}" if check.fix else check.reason)
    origins = allowed_origins(target, facts.apiframe_base_url)
    client_type: type[ApiframeClient] = ApiframeClient
    if facts.api_version == "v2":
        from vary_region.provider.apiframe_v2 import ApiframeV2Client

        client_type = ApiframeV2Client
    client = client_type(facts.apiframe_base_url, lambda: api_key(target, facts), retry=RetryPolicy(budget_seconds=10))
    return ParentReader(client.fetch, origins, timeout_seconds=10.0), origins


def allowed_origins(target: Target, apiframe_base_url: str) -> tuple[ImageOrigin, ...]:
    """The functions' ALLOWED_IMAGE_HOSTS: the local stack admits exactly its simulator's origin
    (vary_region_local.stack); a deployed stack, its AllowedImageHosts parameter or the default."""
    if target.local:
        origin = urlsplit(apiframe_base_url)
        return (ImageOrigin.parse(f"{origin.scheme}://{origin.netloc}"),)
    hosts = DEFAULT_IMAGE_HOSTS
    if target.stack_name:
        stack = target.client("cloudformation").describe_stacks(StackName=target.stack_name)["Stacks"][0]
        parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
        hosts = parameters.get("AllowedImageHosts") or hosts
    return tuple(ImageOrigin.parse(h) for h in hosts.split(",") if h.strip())


def api_key(target: Target, facts: Any) -> str:
    """The stack's APIFRAME key, read with the user's credentials; it stays in this process."""
    from vary_region_cli.doctor_checks import clean_key

    if facts.api_key_parameter:
        answer = target.client("ssm").get_parameter(Name=facts.api_key_parameter, WithDecryption=True)
        raw = answer["Parameter"]["Value"]
    elif facts.api_key_secret_id:
        raw = target.client("secretsmanager").get_secret_value(SecretId=facts.api_key_secret_id)["SecretString"]
    else:
        raise CliError("the stack names no APIFRAME key source, so its parent tasks cannot be read")
    return clean_key(str(raw))


def _decoded(data: bytes, label: str, parent_task_id: str | None, index: str | None = None) -> ParentImage:
    """The picture's real type and natural size, read by decoding it (a name or a header can lie)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as picture:
            kind, (width, height) = picture.format, picture.size
            picture.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CliError(f"{label} is not a readable image ({type(exc).__name__})") from None
    if kind not in _MEDIA_TYPES:
        raise CliError(f"{label} is a {kind} image: use PNG, JPEG or WebP")
    return ParentImage(data, _MEDIA_TYPES[kind], width, height, label, parent_task_id, index)
