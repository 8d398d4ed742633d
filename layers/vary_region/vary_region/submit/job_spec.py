"""The job file a user uploads (job.json, or the inline form with the mask as a data URL)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vary_region.core.errors import JobRejected
from vary_region.core.stages import JobStage
from vary_region.core.strict_json import JsonRefused, loads
from vary_region.submit.mask import MaskFit
from vary_region.submit.mask_regions import MaskRegions, Units, parse_mask_regions
from vary_region.submit.spec_keys import IMAGINE_KEYS, JOB_KEYS, refuse_unknown_keys
from vary_region.submit.task_token import read_task_token

# APIFRAME task ids are UUIDs; accept any short id of that alphabet so other compatible servers work too.
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
_FOLDED_WHITESPACE = re.compile(r"[\t\r\n]+")
_ASPECT_RATIO = re.compile(r"^(?P<w>[1-9][0-9]{0,2}):(?P<h>[1-9][0-9]{0,2})$")
_INDEXES = ("1", "2", "3", "4")


@dataclass(frozen=True)
class ImagineSpec:
    """The first stage of a job that starts from a prompt: imagine, then upscale image `index`."""

    prompt: str
    aspect_ratio: str = "1:1"  # the provider's default

    @property
    def ratio(self) -> float:
        width, height = self.aspect_ratio.split(":")
        return int(width) / int(height)


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for in job.json."""

    parent_task_id: str | None  # None only when the job starts from `imagine`
    prompt: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    mask_regions: MaskRegions | None = None  # the mask as shapes: then no mask file belongs to the job
    mask_fit: MaskFit = MaskFit.EXACT
    index: str | None = None  # which image of an imagine grid to upscale ("1".."4")
    imagine: ImagineSpec | None = None

    @property
    def first_stage(self) -> JobStage:
        if self.imagine is not None:
            return JobStage.IMAGINE
        return JobStage.UPSCALE if self.index is not None else JobStage.INPAINT

    @property
    def is_chain(self) -> bool:
        return self.first_stage is not JobStage.INPAINT


@dataclass(frozen=True)
class InlineMask:
    """A mask sent inside an inline job file (base64), before it is checked."""

    declared_type: str
    data: bytes


@dataclass(frozen=True)
class MaskObject:
    """A mask given as `s3://<bucket>/<key>` (a job requested by an event): read, then checked."""

    bucket: str
    key: str


@dataclass(frozen=True)
class Limits:
    """Size limits on job.json and its fields."""

    max_spec_bytes: int = 256 * 1024
    max_prompt_chars: int = 4000
    max_metadata_bytes: int = 4096


# Told a job file's `task_token` as soon as the file is read, before any other check of it.
OnTaskToken = Callable[[str], None]


def parse_job_spec(raw: bytes, limits: Limits = Limits(), on_token: OnTaskToken | None = None) -> JobSpec:
    """Parse job.json; raise JobRejected with a specific code for every way it can be unusable."""
    document = _load_document(raw, limits)
    _tell_token(document, on_token)
    return _spec_from_document(document, limits)


def parse_inline_job(
    raw: bytes, limits: Limits, max_mask_bytes: int, on_token: OnTaskToken | None = None
) -> tuple[JobSpec, InlineMask | MaskObject | None]:
    """Parse inbox/<job-id>.json: a job spec plus `mask` as a data URL, an `s3://` URI, or regions
    (then no mask comes back)."""
    document = _load_document(raw, limits, max_size=limits.max_spec_bytes + max_mask_bytes * 4 // 3 + 1024)
    _tell_token(document, on_token)
    spec = _spec_from_document(document, limits)
    if spec.mask_regions is not None:
        return spec, None
    mask = document.get("mask")
    if mask is None:
        raise JobRejected(
            "MASK_MISSING", "the inline job has no `mask` field (a data URL of the mask image, or regions)"
        )
    if isinstance(mask, str) and mask.strip().startswith("s3://"):
        return spec, parse_mask_object(mask.strip())
    return spec, parse_mask_data_url(mask, max_mask_bytes)


def _tell_token(document: dict[str, Any], on_token: OnTaskToken | None) -> None:
    """A workflow waiting for this job learns how it ends, a refusal of the rest of its file too."""
    token = read_task_token(document)
    if token is not None and on_token is not None:
        on_token(token)


def parse_mask_object(uri: str) -> MaskObject:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise JobRejected("MASK_LOCATION_INVALID", f"`mask` {uri[:200]!r} is not an s3://<bucket>/<key> URI")
    return MaskObject(bucket, key)


def parse_mask_data_url(value: Any, max_mask_bytes: int) -> InlineMask:
    if not isinstance(value, str):
        raise JobRejected("MASK_DATA_URL_INVALID", "`mask` must be a string data URL like data:image/png;base64,...")
    match = _DATA_URL.match(value.strip())
    if not match:
        raise JobRejected("MASK_DATA_URL_INVALID", "`mask` is not a base64 data URL (data:image/png;base64,...)")
    encoded = re.sub(r"\s+", "", match["data"])
    if len(encoded) * 3 // 4 > max_mask_bytes + 3:
        raise JobRejected("MASK_TOO_LARGE", f"the mask is larger than {max_mask_bytes} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise JobRejected("MASK_DATA_URL_INVALID", "the mask data URL does not hold valid base64") from None
    return InlineMask(declared_type=match["mime"].lower(), data=data)


def _load_document(raw: bytes, limits: Limits, max_size: int | None = None) -> dict[str, Any]:
    max_size = limits.max_spec_bytes if max_size is None else max_size
    if len(raw) > max_size:
        raise JobRejected("SPEC_TOO_LARGE", f"the job file is larger than {max_size} bytes")
    if not raw.strip():
        raise JobRejected("SPEC_EMPTY", "the job file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise JobRejected("SPEC_NOT_UTF8", "the job file is not valid UTF-8") from None
    try:
        document = loads(text)
    except JsonRefused as refused:  # NaN, Infinity and nesting past MAX_DEPTH included
        raise JobRejected("SPEC_INVALID_JSON", f"the job file is not valid JSON ({refused.reason})") from None
    if not isinstance(document, dict):
        raise JobRejected("SPEC_NOT_OBJECT", "the job file must hold a JSON object")
    return document


def _spec_from_document(document: dict[str, Any], limits: Limits) -> JobSpec:
    refuse_unknown_keys(document, JOB_KEYS, "the job file")
    imagine, index = _imagine(document.get("imagine"), document.get("index"), limits)
    if imagine is not None and document.get("parent_task_id") is not None:
        raise JobRejected(
            "PARENT_AMBIGUOUS", "give either `imagine` (start from a prompt) or `parent_task_id`, not both"
        )
    # Only an object is shapes: a string `mask` is the inline form's data URL, read by its caller.
    regions = parse_mask_regions(mask) if isinstance(mask := document.get("mask"), dict) else None
    if imagine is not None and regions is not None and regions.units is Units.PX:
        # Nothing tells the upscale's size in pixels before two tasks are paid for: bounds could not be checked.
        raise JobRejected(
            "MASK_REGIONS_INVALID",
            'a job that starts from `imagine` gives its regions as fractions ("units": "fraction"): '
            "the image's size in pixels is known only after it is made",
        )
    return JobSpec(
        parent_task_id=None if imagine is not None else _parent_task_id(document.get("parent_task_id")),
        prompt=_prompt(document.get("prompt"), limits),
        metadata=_metadata(document.get("metadata"), limits),
        mask_regions=regions,
        mask_fit=_mask_fit(document.get("mask_fit")),
        index=index,
        imagine=imagine,
    )


def _index(value: Any, field_name: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if text not in _INDEXES:
        raise JobRejected("INDEX_INVALID", f"`{field_name}` must be 1, 2, 3 or 4 (which image of the grid)")
    return text


def _imagine(value: Any, top_index: Any, limits: Limits) -> tuple[ImagineSpec | None, str | None]:
    index = _index(top_index, "index")
    if value is None:
        return None, index
    if not isinstance(value, dict):
        raise JobRejected("IMAGINE_INVALID", '`imagine` must be an object: {"prompt": "...", "index": "1"}')
    refuse_unknown_keys(value, IMAGINE_KEYS, "`imagine`")
    prompt = _prompt(value.get("prompt"), limits)
    if prompt is None:
        raise JobRejected("IMAGINE_INVALID", "`imagine.prompt` is required: the prompt of the grid to make")
    inner = _index(value.get("index"), "imagine.index")
    if inner is not None and index is not None and inner != index:
        raise JobRejected("INDEX_INVALID", "`index` and `imagine.index` name different images")
    ratio = value.get("aspect_ratio", "1:1")
    if not isinstance(ratio, str) or not _ASPECT_RATIO.match(ratio.strip()):
        raise JobRejected("ASPECT_RATIO_INVALID", '`imagine.aspect_ratio` must look like "16:9"')
    return ImagineSpec(prompt=prompt, aspect_ratio=ratio.strip()), inner or index or "1"


def _mask_fit(value: Any) -> MaskFit:
    if value is None:
        return MaskFit.EXACT
    if value not in (MaskFit.EXACT.value, MaskFit.RESIZE.value):
        raise JobRejected("MASK_FIT_INVALID", '`mask_fit` must be "exact" (the default) or "resize"')
    return MaskFit(value)


def _parent_task_id(value: Any) -> str:
    if value is None:
        raise JobRejected("PARENT_TASK_ID_MISSING", "`parent_task_id` (the id of an upscale-1x task) is required")
    if not isinstance(value, str):
        raise JobRejected("PARENT_TASK_ID_INVALID", "`parent_task_id` must be a string")
    value = value.strip()
    if not _TASK_ID.match(value):
        raise JobRejected("PARENT_TASK_ID_INVALID", "`parent_task_id` is not a task id (letters, digits, '-' and '_')")
    return value


def _prompt(value: Any, limits: Limits) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobRejected("PROMPT_INVALID", "`prompt` must be a string")
    # Line breaks and tabs are harmless typing accidents; other control characters are not.
    value = _FOLDED_WHITESPACE.sub(" ", value).strip()
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise JobRejected("PROMPT_CONTROL_CHARACTERS", "`prompt` contains control characters")
    if len(value) > limits.max_prompt_chars:
        raise JobRejected("PROMPT_TOO_LONG", f"`prompt` is longer than {limits.max_prompt_chars} characters")
    return value or None


def _metadata(value: Any, limits: Limits) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JobRejected("METADATA_INVALID", "`metadata` must be a JSON object")
    if len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode()) > limits.max_metadata_bytes:
        raise JobRejected("METADATA_TOO_LARGE", f"`metadata` is larger than {limits.max_metadata_bytes} bytes")
    return value
