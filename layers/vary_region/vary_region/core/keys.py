"""The S3 layout of a job: which inbox keys belong to which job, and where its outputs go."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

MASK_EXTENSIONS = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
MAX_JOB_ID_CHARS = 200


class InboxObjectKind(StrEnum):
    SPEC = "spec"  # inbox/<job-id>/job.json
    MASK = "mask"  # inbox/<job-id>/mask.<png|jpg|jpeg|webp>
    INLINE = "inline"  # inbox/<job-id>.json, mask carried inside as a data URL


@dataclass(frozen=True)
class InboxObject:
    """An upload under inbox/ that belongs to a job: its job.json, its mask or an inline job."""

    job_id: str
    kind: InboxObjectKind
    key: str

    @property
    def declared_mask_type(self) -> str | None:
        return mask_type_of_key(self.key) if self.kind is InboxObjectKind.MASK else None


def mask_type_of_key(key: str) -> str | None:
    """The image type a key's extension declares (mask.png, a.JPEG, ...), or None."""
    name = key.rsplit("/", 1)[-1]
    return MASK_EXTENSIONS.get(name.rsplit(".", 1)[1].lower()) if "." in name else None


def parse_inbox_key(key: str, inbox_prefix: str = "inbox/") -> InboxObject | None:
    """Classify a decoded S3 key; None for keys that are not part of any job (they are ignored)."""
    if not key.startswith(inbox_prefix):
        return None
    rest = key[len(inbox_prefix) :]
    parts = rest.split("/")
    if len(parts) == 1:
        name = parts[0]
        if name.lower().endswith(".json") and len(name) > len(".json"):
            job_id = name[: -len(".json")]
            return InboxObject(job_id, InboxObjectKind.INLINE, key) if is_valid_job_id(job_id) else None
        return None
    if len(parts) != 2 or not is_valid_job_id(parts[0]):
        return None
    job_id, name = parts
    if name == "job.json":
        return InboxObject(job_id, InboxObjectKind.SPEC, key)
    stem, _, ext = name.rpartition(".")
    if stem == "mask" and ext.lower() in MASK_EXTENSIONS:
        return InboxObject(job_id, InboxObjectKind.MASK, key)
    return None


def is_valid_job_id(job_id: str) -> bool:
    """Any printable name without a slash: spaces and unicode are fine, control characters are not.
    The slash is the key's separator (inbox/<job-id>/...), and the CLI checks ids by this rule too."""
    if not job_id or len(job_id) > MAX_JOB_ID_CHARS or job_id in (".", "..") or "/" in job_id:
        return False
    return not any(unicodedata.category(ch).startswith("C") for ch in job_id)


def job_prefix(job_id: str, inbox_prefix: str = "inbox/") -> str:
    return f"{inbox_prefix}{job_id}/"


@dataclass(frozen=True)
class ResultKeys:
    """Where a job's outputs land: never under inbox/, so the pipeline cannot trigger itself."""

    job_id: str
    results_prefix: str = "results/"

    @property
    def folder(self) -> str:
        return f"{self.results_prefix}{self.job_id}/"

    @property
    def result_json(self) -> str:
        return self.folder + "result.json"

    @property
    def error_json(self) -> str:
        return self.folder + "error.json"

    @property
    def mask(self) -> str:
        """The mask exactly as it was sent to the provider."""
        return self.folder + "mask.png"

    def image(self, name: str) -> str:
        """name is "grid", "1".."4", or "parent" (the inpaint's parent image, as copied)."""
        return f"{self.folder}{name}.png"
