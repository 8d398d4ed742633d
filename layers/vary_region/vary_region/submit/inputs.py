"""A job's inputs, read and checked before anything is paid: job.json paired with its mask file (in
either upload order), or an inline job file alone (its mask inline, as regions, or named by an
s3:// URI inside the jobs bucket's inbox or one of MASK_SOURCES).
"""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import ClientError

from vary_region.aws.job_files import JobFiles, job_file_kinds
from vary_region.core.errors import JobRejected
from vary_region.core.keys import InboxObject, InboxObjectKind, mask_type_of_key
from vary_region.settings import Settings
from vary_region.submit.job_spec import JobSpec, Limits, MaskObject, parse_inline_job, parse_job_spec
from vary_region.submit.mask import Mask, validate_mask
from vary_region.submit.mask_file import normalise_media_type

# The job's spec, and its mask (None when job.json gives it as regions).
Inputs = tuple[JobSpec, Mask | None]


class WaitingForFiles(Exception):
    """One of the job's two files has not arrived yet."""

    def __init__(self, what: str) -> None:
        super().__init__(f"waiting for {what}")
        self.what = what


class JobInputs:
    def __init__(self, settings: Settings, files: JobFiles, on_token: Callable[[str, str], None] | None = None) -> None:
        self._settings = settings
        self._files = files
        self._on_token = on_token  # (job id, task token): see task_token.py
        self._limits = Limits(settings.max_spec_bytes, settings.max_prompt_chars, settings.max_metadata_bytes)

    def load(self, uploaded: InboxObject) -> Inputs | None:
        """The job's checked inputs, or None when a file it names is gone meanwhile. Raises
        JobRejected, or WaitingForFiles while a job folder lacks one of its two files."""
        if uploaded.kind is InboxObjectKind.INLINE:
            return self._load_inline(uploaded)
        return self._load_folder(uploaded)

    def _token_of(self, uploaded: InboxObject) -> Callable[[str], None] | None:
        on_token = self._on_token
        return None if on_token is None else lambda token: on_token(uploaded.job_id, token)

    def _load_inline(self, uploaded: InboxObject) -> Inputs | None:
        max_mask = self._settings.max_mask_bytes
        stored = self._files.read(uploaded.key, self._limits.max_spec_bytes + max_mask * 2)
        if stored is None:
            return None
        if stored.data is None:
            raise JobRejected("SPEC_TOO_LARGE", "the inline job file is too large")
        spec, inline_mask = parse_inline_job(stored.data, self._limits, max_mask, self._token_of(uploaded))
        if inline_mask is None:
            return spec, None
        if isinstance(inline_mask, MaskObject):
            return spec, self._read_mask_object(inline_mask)
        return spec, validate_mask(inline_mask.data, inline_mask.declared_type, max_mask)

    def _load_folder(self, uploaded: InboxObject) -> Inputs | None:
        files = job_file_kinds(self._files.list_job_folder(uploaded.job_id))
        specs, masks = files[InboxObjectKind.SPEC], files[InboxObjectKind.MASK]
        if len(masks) > 1:
            raise JobRejected("MASK_AMBIGUOUS", "the job folder holds more than one mask file; keep exactly one")
        if not specs:
            raise WaitingForFiles(f"the job file {self._settings.inbox_prefix}{uploaded.job_id}/job.json")
        # job.json is read even before a mask file arrives: with regions it is the whole job.
        spec_file = self._files.read(specs[0].key, self._limits.max_spec_bytes)
        if spec_file is None:
            return None
        if spec_file.data is None:
            raise JobRejected("SPEC_TOO_LARGE", f"job.json is larger than {self._limits.max_spec_bytes} bytes")
        spec = parse_job_spec(spec_file.data, self._limits, self._token_of(uploaded))
        if spec.mask_regions is not None:
            if masks:
                raise JobRejected(
                    "MASK_AMBIGUOUS", "job.json gives the mask as regions and the folder also holds a mask file"
                )
            return spec, None
        if not masks:
            raise WaitingForFiles(
                f"the mask file {self._settings.inbox_prefix}{uploaded.job_id}/mask.(png|jpg|jpeg|webp)"
            )
        mask = self._read_mask_file(masks[0])
        return None if mask is None else (spec, mask)

    def _read_mask_file(self, listed: InboxObject) -> Mask | None:
        max_mask = self._settings.max_mask_bytes
        mask_file = self._files.read(listed.key, max_mask)
        if mask_file is None:
            return None
        if mask_file.data is None:
            raise JobRejected("MASK_TOO_LARGE", f"the mask is {mask_file.size} bytes; the limit is {max_mask}")
        mask = validate_mask(mask_file.data, listed.declared_mask_type, max_mask)
        uploaded_as = normalise_media_type(mask_file.content_type)
        if uploaded_as and uploaded_as.startswith("image/") and uploaded_as != mask.media_type:
            raise JobRejected(
                "MASK_TYPE_MISMATCH", f"the mask was uploaded as {uploaded_as} but its content is {mask.media_type}"
            )
        return mask

    def _read_mask_object(self, mask: MaskObject) -> Mask:
        """A mask the job names by URI: only inside the jobs bucket's inbox or MASK_SOURCES, which is
        exactly what this function's policy lets it read."""
        allowed = self._settings.mask_locations
        if not any(place.holds(mask.bucket, mask.key) for place in allowed):
            raise JobRejected(
                "MASK_LOCATION_INVALID",
                f"an s3:// mask must be under {' or '.join(str(place) for place in allowed)}",
            )
        max_mask = self._settings.max_mask_bytes
        try:
            stored = self._files.in_bucket(mask.bucket).read(mask.key, max_mask)
        except ClientError as exc:
            denied = exc.response.get("Error", {}).get("Code") in ("AccessDenied", "403")
            if not denied or mask.bucket == self._files.bucket:  # the inbox unreadable: the stack's fault
                raise
            # An allowed place this function still cannot read (a bucket policy, a KMS key): retrying
            # would not help, and the job's owner is the one to fix it.
            raise JobRejected("MASK_UNREADABLE", f"the mask s3://{mask.bucket}/{mask.key} cannot be read") from None
        if stored is None:
            raise JobRejected("MASK_MISSING", f"the mask s3://{mask.bucket}/{mask.key} does not exist")
        if stored.data is None:
            raise JobRejected("MASK_TOO_LARGE", f"the mask is {stored.size} bytes; the limit is {max_mask}")
        declared = mask_type_of_key(mask.key) or normalise_media_type(stored.content_type)
        return validate_mask(stored.data, declared, max_mask)
