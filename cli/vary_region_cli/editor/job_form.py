"""The page's job fields checked as `vary-region submit` checks its options, then as the pipeline
will read the job file (vary_region.submit.job_spec): a job the page sends is refused here, with
the field and the pipeline's error code, rather than REJECTED after upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vary_region.core.errors import JobRejected
from vary_region.submit.job_spec import parse_job_spec

from vary_region_cli import jobs
from vary_region_cli.config import CliError
from vary_region_cli.editor.sources import ParentImage

MASK_FITS = ("exact", "resize")
# Which page field a pipeline error code is about.
_FIELD_OF_CODE = {"PROMPT": "prompt", "METADATA": "metadata", "PARENT": "parent_task_id", "MASK_FIT": "mask_fit"}


class FormError(ValueError):
    """A field the page must correct: answered as {"error": {"field", "code", "message"}}."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field, self.code, self.message = field, code, message

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class JobForm:
    job_id: str
    document: dict[str, Any]  # job.json, exactly as `submit` writes it


def job_from_form(form: dict[str, Any], parent: ParentImage, *, new_id: bool = True) -> JobForm:
    def text(name: str) -> str:
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise FormError(name, "FIELD_INVALID", f"{name} must be text")
        return (value or "").strip()

    job_id = text("job_id") or (jobs.new_job_id() if new_id else "")
    try:
        jobs.check_job_id(job_id)
    except CliError as exc:
        raise FormError("job_id", "JOB_ID_INVALID", str(exc)) from None
    try:
        metadata = jobs.parse_metadata(text("metadata") or None, "metadata")
    except CliError as exc:
        raise FormError("metadata", "METADATA_INVALID", str(exc)) from None
    # A task id comes with the parent (--parent, --job); a local file's parent is named on the page.
    parent_task_id = parent.parent_task_id or text("parent_task_id")
    if not parent_task_id:
        raise FormError(
            "parent_task_id", "PARENT_MISSING", "name the upscale task this picture came from (its task id)"
        )
    document = jobs.job_document(parent_task_id, text("prompt") or None, metadata)
    if parent.index:
        document["index"] = parent.index
    mask_fit = text("mask_fit") or "exact"
    if mask_fit not in MASK_FITS:
        raise FormError("mask_fit", "MASK_FIT_INVALID", 'mask fit must be "exact" or "resize"')
    if mask_fit == "resize":
        document["mask_fit"] = mask_fit
    try:
        parse_job_spec(jobs.job_file_bytes(document))
    except JobRejected as exc:
        code = exc.error.code
        field = next((name for prefix, name in _FIELD_OF_CODE.items() if code.startswith(prefix)), "job")
        raise FormError(field, code, exc.error.message) from None
    return JobForm(job_id, document)
