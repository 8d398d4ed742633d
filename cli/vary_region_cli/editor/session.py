"""What the editor's page can ask for: its parent picture, a job checked, submitted or saved, and the
state and variants of the jobs it submitted. Answers are (status, body, content type); errors are
JSON {"error": {"field", "code", "message"}} the page shows beside the field they are about."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vary_region_cli import jobs
from vary_region_cli.config import CliError, Target
from vary_region_cli.editor.job_form import FormError, JobForm, job_from_form
from vary_region_cli.editor.mask_export import MaskRefused, decode_data_url, strict_mask_png
from vary_region_cli.editor.sources import ParentImage
from vary_region_cli.masks import MaskError, check_mask_file

Answer = tuple[int, bytes, str]
_JOB_ROUTE = re.compile(r"api/jobs/([^/]+)(?:/([1-4])\.png)?")


@dataclass
class EditorSession:
    parent: ParentImage
    target: Target | None
    out_dir: Path | None = None
    announce: Callable[[str], None] = print  # the submitted job's id, on the command's stdout
    submitted: list[str] = field(default_factory=list)

    def handle(self, method: str, route: str, body: bytes) -> Answer:
        if method == "GET" and route == "api/session":
            return _json(200, self.describe())
        if method == "GET" and route == "api/parent":
            return 200, self.parent.data, self.parent.media_type
        if method == "GET" and (match := _JOB_ROUTE.fullmatch(route)):
            return self._job(match.group(1), match.group(2))
        if method == "POST" and route in ("api/check", "api/submit", "api/save"):
            try:
                return self._post(route, _form(body))
            except FormError as exc:
                return _json(400, {"error": exc.to_dict()})
        if method == "POST" and route == "api/done":
            return _json(200, {"done": True})
        return _json(404, {"error": {"code": "NOT_FOUND", "message": f"no {method} {route}"}})

    def describe(self) -> dict[str, Any]:
        parent = self.parent
        return {
            "label": parent.label,
            "width": parent.width,
            "height": parent.height,
            "parent_task_id": parent.parent_task_id,
            "index": parent.index,
            "can_submit": self.target is not None and bool(self.target.bucket or self.target.stack_name),
            "can_save": self.out_dir is not None,
        }

    def _post(self, route: str, form: dict[str, Any]) -> Answer:
        job = job_from_form(form, self.parent)
        if route == "api/check":
            return _json(200, {"job_id": job.job_id, "job": job.document})
        mask = self._mask(form.get("mask"))
        if route == "api/save":
            return _json(200, {"job_id": job.job_id, "files": self._save(job, mask)})
        return _json(200, {"job_id": job.job_id, "files": self._submit(job, mask)})

    def _mask(self, value: object) -> bytes:
        try:
            mask = strict_mask_png(decode_data_url(value), (self.parent.width, self.parent.height))
            check_mask_file(mask, "the mask")  # the pipeline's own check, as `submit --mask` runs it
        except MaskRefused as exc:
            raise FormError("mask", exc.code, exc.message) from None
        except MaskError as exc:
            raise FormError("mask", "MASK_INVALID", str(exc)) from None
        return mask

    def _submit(self, job: JobForm, mask: bytes) -> list[str]:
        """Exactly `vary-region submit --mask`: job.json then mask.png into inbox/<job-id>/."""
        if self.target is None:
            raise FormError("job", "STACK_UNAVAILABLE", "no stack to submit to: use Save")
        try:
            uploads = jobs.submit_job(self.target, job.job_id, job.document, mask, "image/png")
        except CliError as exc:
            code = "JOB_ID_USED" if "already used" in str(exc) else "STACK_UNAVAILABLE"
            raise FormError("job_id" if code == "JOB_ID_USED" else "job", code, str(exc)) from None
        self.submitted.append(job.job_id)
        self.announce(job.job_id)
        return [f"s3://{self.target.bucket}/{upload.key}" for upload in uploads]

    def _save(self, job: JobForm, mask: bytes) -> list[str]:
        if self.out_dir is None:
            raise FormError("job", "SAVE_UNAVAILABLE", "start the editor with --out DIR to save files")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        mask_path, job_path = self.out_dir / "mask.png", self.out_dir / "job.json"
        mask_path.write_bytes(mask)
        job_path.write_bytes(jobs.job_file_bytes(job.document))
        return [str(job_path), str(mask_path)]

    def _job(self, job_id: str, image: str | None) -> Answer:
        """Only the jobs this page submitted: the page is no window onto the whole bucket."""
        if job_id not in self.submitted or self.target is None:
            return _json(404, {"error": {"code": "NOT_FOUND", "message": f"job {job_id} was not submitted here"}})
        if image is not None:
            key = f"{jobs.RESULTS}{job_id}/{image}.png"
            data = self.target.s3.get_object(Bucket=self.target.require_bucket(), Key=key)["Body"].read()
            return 200, data, "image/png"
        item = jobs.get_item(self.target, job_id) or {"status": "WAITING"}
        error = item.get("error") if isinstance(item.get("error"), dict) else None
        return _json(
            200,
            {
                "job_id": job_id,
                "status": item.get("status"),
                "percentage": item.get("percentage"),
                "stage": item.get("stage"),
                "error": {"code": error.get("code"), "message": error.get("message")} if error else None,
                "images": ["1", "2", "3", "4"] if item.get("status") == "COMPLETED" else [],
            },
        )


def _form(body: bytes) -> dict[str, Any]:
    try:
        form = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormError("job", "BODY_INVALID", "the page sent no JSON object") from None
    if not isinstance(form, dict):
        raise FormError("job", "BODY_INVALID", "the page sent no JSON object")
    return form


def _json(status: int, value: Any) -> Answer:
    return status, json.dumps(value, default=str, allow_nan=False).encode("utf-8"), "application/json"
