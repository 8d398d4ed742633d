"""From an uploaded file to the job's one paid submission.

Pairs job.json with its mask (in either upload order; a job.json giving the mask as regions is a
whole job alone), validates both, reads the parent task (Fetch, and its image's size from the first
bytes) and fits the mask to it, all before any credit is spent; then wins the job's single
submission claim with a conditional write, and only then calls APIFRAME. Redelivered and
concurrent events lose the claim and do nothing. Once claimed, the claim is given back only when
APIFRAME certainly did not take the request; every other failure leaves the job flagged and never
resent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from vary_region.aws.job_files import JobFiles, job_file_kinds
from vary_region.core.credits import (
    CreditReservation,
    OverBudget,
    OverBudgetAction,
    Settlement,
    none_spent,
    periods_at,
    reserve,
)
from vary_region.core.errors import (
    ErrorStage,
    JobError,
    JobRejected,
    ProviderRejected,
    ProviderUnavailable,
    RequestNotSent,
    SubmissionAmbiguous,
)
from vary_region.core.job import Job, JobStatus, timestamp, utc_now
from vary_region.core.keys import InboxObject, InboxObjectKind, ResultKeys, mask_type_of_key, parse_inbox_key
from vary_region.core.stages import JobStage, stages_from
from vary_region.endings import JobEndings, ensure_error_document
from vary_region.observability import MetricUnit, logger, metrics, tracer
from vary_region.provider.balance import ProviderBalance
from vary_region.provider.port import Provider
from vary_region.provider.stage_requests import (
    ImagineRequest,
    InpaintRequest,
    StageRequest,
    UpscaleRequest,
)
from vary_region.provider.webhook_auth import hash_webhook_secret, new_webhook_secret
from vary_region.provider.webhook_token import webhook_token
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, JudgedStage, ProviderBusy
from vary_region.submit.job_spec import JobSpec, Limits, MaskObject, parse_inline_job, parse_job_spec
from vary_region.submit.mask import BinaryMask, Mask, MaskFit, fit_mask, normalise_media_type, validate_mask
from vary_region.submit.mask_regions import render_regions
from vary_region.submit.parent import ParentNotReady, ParentReader
from vary_region.submit.requested import JobRequestInvalid, RequestedJob


class SubmitOutcome(StrEnum):
    IGNORED = "ignored"  # not a job file
    WAITING = "waiting_for_files"  # the other half of the job has not arrived yet
    ALREADY_HANDLED = "already_handled"  # a redelivery, or the other file's event won the claim
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    HELD = "held"  # valid, but it must wait (no provider slot, parent still running): back through the queue
    DEFERRED = "deferred"  # too little time left in the invocation for a paid call: back through the queue, untouched


@dataclass(frozen=True)
class SubmitResult:
    """What handling one upload did to its job."""

    outcome: SubmitOutcome
    job_id: str | None = None
    task_id: str | None = None
    error: JobError | None = None
    first_seen: bool = False  # this upload was the first sign of the job


class _Waiting(Exception):
    """One of the job's two files has not arrived yet."""

    def __init__(self, what: str) -> None:
        super().__init__(f"waiting for {what}")
        self.what = what


# The seconds left in the Lambda invocation (LambdaContext.get_remaining_time_in_millis, in seconds).
TimeLeft = Callable[[], float]


class Hold(Protocol):
    """Puts an upload back on the submit queue, to be handled again after a delay (default: the
    queue's hold delay)."""

    def __call__(self, key: str, delay_seconds: int | None = None) -> None: ...


class HeldReason(StrEnum):
    """Why a valid job waits in the queue (`held_reason` on its item)."""

    PROVIDER_SLOTS_FULL = "PROVIDER_SLOTS_FULL"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PARENT_RUNNING = "PARENT_RUNNING"
    PARENT_UNAVAILABLE = "PARENT_UNAVAILABLE"  # Fetch or the parent's image host unreachable
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"  # the day's or the month's credit limit has no room for the chain
    PROVIDER_BALANCE_LOW = "PROVIDER_BALANCE_LOW"  # the provider account's credits cannot cover the chain


# A mask file in a chain from a prompt is checked against the aspect ratio before anything is paid:
# its exact size in pixels is known only once the upscale exists (then it is scaled to it).
_RATIO_TOLERANCE = 0.02


@dataclass(frozen=True)
class _StagePlan:
    """One stage, checked and ready to claim: what to send once the claim is won."""

    stage: JobStage
    first: bool
    build: Callable[[str | None, str], StageRequest]  # (webhook URL, secret) -> the paid request
    parent_image_url: str | None = None  # the inpaint's parent image, copied beside the results
    mask: BinaryMask | None = None  # the inpaint's mask, stored as results/<job-id>/mask.png


class JobSubmitter:
    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        files: JobFiles,
        apiframe: Provider,
        parents: ParentReader,
        clock: Callable[[], datetime] = utc_now,
        hold: Hold | None = None,
        balance: ProviderBalance | None = None,
    ) -> None:
        self._balance = balance
        self._settings = settings
        self._parents = parents
        self._hold = hold
        self._store = store
        self._files = files
        self._apiframe = apiframe
        self._clock = clock
        self._ends = JobEndings(store, files, settings.results_prefix, clock)
        self._limits = Limits(settings.max_spec_bytes, settings.max_prompt_chars, settings.max_metadata_bytes)

    @tracer.capture_method(capture_response=False)
    def handle_upload(self, key: str, time_left: TimeLeft | None = None) -> SubmitResult:
        """React to one uploaded object (its decoded S3 key).

        time_left: the seconds left in this invocation; with too few for a paid call's worst case,
        the upload goes back to the queue untouched (checked now, and again right before the claim).
        """
        uploaded = parse_inbox_key(key, self._settings.inbox_prefix)
        if uploaded is None:
            return SubmitResult(SubmitOutcome.IGNORED)
        job_id = uploaded.job_id
        logger.append_keys(job_id=job_id)
        if not self._time_for_paid_call(time_left):
            return self._defer(uploaded)
        existing = self._store.get(job_id)
        if existing is not None and (existing.status.is_final or existing.stage_claimed):
            ensure_error_document(self._files, ResultKeys(job_id, self._settings.results_prefix), existing)
            return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id, existing.task_id)
        if self._hold is not None and existing is not None:
            # A held job's wake-up while every slot is still taken: holding it again costs one read of
            # the slot counter, not a re-read and re-validation of its mask (up to 8 MB) every 30-45 s.
            if self._still_no_free_slot(existing):
                return self._hold_back(
                    self._hold,
                    uploaded,
                    "still no free provider slot; job held back again",
                    HeldReason.PROVIDER_SLOTS_FULL,
                    already_held=True,
                )
            # Likewise for a job held for credits: a read of the ledger's two items, or of the balance.
            short = self._still_short_of_credits(existing)
            if short is not None:
                reason, until = short
                return self._hold_back(
                    self._hold,
                    uploaded,
                    "still short of credits; job held back again",
                    reason,
                    # Written again only when the budget's date moved (a new day, still full): once a period.
                    already_held=until is None or existing.held_until == timestamp(until),
                    delay_seconds=self._credits_hold_delay(reason),
                    until=until,
                )
        first_seen = existing is None and self._store.record_received(job_id, self._clock())
        try:
            inputs = self._load_inputs(uploaded)
            if inputs is None and existing is not None and existing.was_submitted:
                raise _Waiting("its job files, which are gone from the inbox")
            if inputs is None:
                result = SubmitResult(SubmitOutcome.WAITING, job_id)
            else:
                spec, mask = inputs
                # The job's state, never the job file (which its owner may have changed since), says
                # whether this is its first claim: a chain under way goes on with its open stage.
                if existing is not None and existing.was_submitted:
                    stage, first = existing.stage, False
                else:
                    stage, first = spec.first_stage, True
                logger.append_keys(stage=str(stage))
                plan = self._plan(stage, first, spec, mask, existing)
                result = self._submit(uploaded, plan, spec, existing, time_left)
        except _Waiting as waiting:
            if existing is not None and existing.was_submitted:
                # A chain under way whose files left the inbox cannot go on: nothing would ever come back.
                message = f"the chain's next stage cannot start: {waiting}"
                result = self._fail_later_stage(existing, JobError("JOB_FILES_MISSING", message, ErrorStage.INTAKE))
            else:
                # Said on the item, so every view of the job (the CLI, the console) tells what it waits for.
                self._store.record_waiting_for(job_id, waiting.what, self._clock())
                result = SubmitResult(SubmitOutcome.WAITING, job_id)
        except JobRejected as rejection:
            under_way = existing is not None and existing.was_submitted
            error = rejection.error
            if existing is not None and under_way:
                result = self._fail_later_stage(existing, error)
            else:
                result = self._reject(job_id, error)
        except ParentNotReady as waiting:
            result = self._wait_for_parent(uploaded, waiting, existing)
        return replace(result, first_seen=first_seen)

    # --- each stage checked before it is paid ----------------------------------------------------

    def _plan(self, stage: JobStage, first: bool, spec: JobSpec, mask: Mask | None, job: Job | None) -> _StagePlan:
        """Everything free about `stage` done (parent read, mask checked and fitted); raises
        JobRejected or ParentNotReady. A chain's first stage checks the mask for the whole chain."""
        if stage is JobStage.IMAGINE:
            assert spec.imagine is not None  # first_stage is IMAGINE only with it
            imagine = spec.imagine
            self._check_mask_ratio(spec, mask, imagine.ratio)
            return _StagePlan(
                stage, first, lambda url, secret: ImagineRequest(imagine.prompt, imagine.aspect_ratio, url, secret)
            )
        if stage is JobStage.UPSCALE:
            grid_task = spec.parent_task_id if first else (job.task_id_of(JobStage.IMAGINE) if job else None)
            if grid_task is None or spec.index is None:
                raise JobRejected("PARENT_TASK_ID_MISSING", "the upscale stage has no imagine task to upscale")
            grid = self._parents.read_grid(grid_task, own_task=not first)
            logger.info("grid parent read", extra={"grid_width": grid.width, "grid_height": grid.height})
            if first:  # an upscale-1x is one quarter of its grid: the inpaint's size, known before paying
                self._mask_at(spec, mask, (grid.width // 2, grid.height // 2), spec.mask_fit)
            index = spec.index
            return _StagePlan(stage, first, lambda url, secret: UpscaleRequest(grid_task, index, url, secret))
        parent_task = spec.parent_task_id if first else (job.task_id_of(JobStage.UPSCALE) if job else None)
        if parent_task is None:
            raise JobRejected("PARENT_TASK_ID_MISSING", "the inpaint stage has no upscale to inpaint")
        parent = self._parents.read(parent_task, own_task=not first)
        logger.info("parent read", extra={"parent_width": parent.width, "parent_height": parent.height})
        # In a chain the mask was checked against the size the upscale was going to have; it is
        # scaled to the size it has (the same, unless the provider changed its sizes).
        binary = self._mask_at(spec, mask, parent.size, MaskFit.RESIZE if spec.is_chain else spec.mask_fit)
        # A later stage sends the prompt the first claim recorded (and result.json shows), whatever
        # the job file says now.
        prompt = spec.prompt if first or job is None else job.prompt

        def inpaint(url: str | None, secret: str) -> InpaintRequest:
            return InpaintRequest(parent_task, binary.to_data_url(), prompt, url, secret)

        return _StagePlan(stage, first, inpaint, parent_image_url=parent.image_url, mask=binary)

    @staticmethod
    def _mask_at(spec: JobSpec, mask: Mask | None, size: tuple[int, int], fit: MaskFit) -> BinaryMask:
        if spec.mask_regions is not None:
            return render_regions(spec.mask_regions, size)
        if mask is None:  # _load_inputs returns a job without a mask file only when it has regions
            raise JobRejected("MASK_MISSING", "the job has neither a mask file nor mask regions")
        return fit_mask(mask, size, fit)

    @staticmethod
    def _check_mask_ratio(spec: JobSpec, mask: Mask | None, ratio: float) -> None:
        if mask is None:
            return  # regions in fractions (job_spec refuses pixels here): they fit any size
        mask_ratio = mask.width / mask.height
        if abs(mask_ratio - ratio) > _RATIO_TOLERANCE * ratio:
            aspect = spec.imagine.aspect_ratio if spec.imagine else "1:1"
            raise JobRejected(
                "MASK_SIZE_MISMATCH",
                f"the mask is {mask.width}x{mask.height}, which is not the {aspect} aspect ratio of the image "
                "the chain makes; draw it at that ratio, or give the mask as regions in fractions",
            )

    def _wait_for_parent(self, uploaded: InboxObject, waiting: ParentNotReady, job: Job | None) -> SubmitResult:
        if self._hold is None:  # no queue to hold it in (a direct S3 trigger): let AWS retry the event
            raise ProviderUnavailable(str(waiting))
        stage = job.stage if job is not None and job.was_submitted else None
        return self._hold_back(
            self._hold, uploaded, f"job waits for its parent: {waiting}", HeldReason(waiting.reason), stage=stage
        )

    def _still_no_free_slot(self, job: Job) -> bool:
        """Only for a job already found valid and held: its inputs were checked when it was held, and
        the claim transaction, not this read, stays the guard against taking a slot that is not free."""
        if job.held_at is None or job.status is not JobStatus.RECEIVED or job.submit_claim is not None:
            return False
        return self._store.slots_in_use() >= self._store.max_active_tasks

    def _still_short_of_credits(self, job: Job) -> tuple[HeldReason, datetime | None] | None:
        """A job held for budget or for the provider's balance, whose cost was recorded when it was
        held: the reason it must still wait (with, for the budget, when the last full period ends),
        or None. As for slots, the claim's conditional reservation, not this read, is the guard
        against overspending."""
        needed = job.credits_needed
        if needed is None or job.held_at is None or job.status is not JobStatus.RECEIVED or job.submit_claim:
            return None  # not held now (held_reason is only the last cause): the whole path decides
        if job.held_reason == HeldReason.BUDGET_EXCEEDED:
            usage = self._store.credit_usage(periods_at(self._clock()))
            if any(period.limit and needed > period.limit for period in usage):
                return None  # the limit was lowered below the chain's cost: the claim rejects it
            full = [period.period.next_opens for period in usage if not period.room_for(needed)]
            return (HeldReason.BUDGET_EXCEEDED, max(full)) if full else None
        if job.held_reason == HeldReason.PROVIDER_BALANCE_LOW and self._balance_too_low(needed):
            return HeldReason.PROVIDER_BALANCE_LOW, None
        return None

    def _credits_hold_delay(self, reason: HeldReason) -> int:
        """Budget: wake up when the day turns, or every 15 minutes (SQS's longest delay) if that is
        later, since credits given back by failed jobs may make room before then. Balance: once the
        cached balance may have changed."""
        if reason is HeldReason.PROVIDER_BALANCE_LOW:
            return max(self._settings.hold_delay_seconds, self._settings.balance_cache_seconds)
        now = self._clock()
        day, _ = periods_at(now)
        until_next_day = (day.next_opens - now).total_seconds()
        return int(max(self._settings.hold_delay_seconds, min(900, until_next_day + 1)))

    def _balance_too_low(self, credits_needed: int) -> str | None:
        left = self._balance.credits() if self._balance is not None else None
        if left is None or left >= credits_needed:
            return None
        return f"the provider account has {left} credits left, the job needs {credits_needed}"

    def _over_budget(self, uploaded: InboxObject, over: OverBudget, credits_needed: int) -> SubmitResult:
        error = JobError("BUDGET_EXCEEDED", str(over), ErrorStage.SUBMIT)
        policy = self._settings.budget_policy
        if not over.fits_ever or policy.over_budget is OverBudgetAction.REJECT:
            return self._reject(uploaded.job_id, error)
        if self._hold is None:
            raise ProviderUnavailable(str(over))  # no queue to hold it in (a direct S3 trigger): AWS retries
        return self._hold_back(
            self._hold,
            uploaded,
            f"over the credit budget; job held back: {over}",
            HeldReason.BUDGET_EXCEEDED,
            delay_seconds=self._credits_hold_delay(HeldReason.BUDGET_EXCEEDED),
            credits_needed=credits_needed,
            until=over.period.next_opens,  # the full period (the month's, when both are) ends
        )

    def _hold_back(
        self,
        hold: Hold,
        uploaded: InboxObject,
        message: str,
        reason: HeldReason,
        *,
        already_held: bool = False,
        stage: JobStage | None = None,
        delay_seconds: int | None = None,
        credits_needed: int | None = None,
        until: datetime | None = None,
    ) -> SubmitResult:
        """until: when the job can go (the budget's next period); by default, when it is next tried."""
        hold(uploaded.key, delay_seconds)
        if not already_held:  # a wake-up that changes nothing writes nothing (table and index alike)
            now = self._clock()
            until = until or self._next_try(now, delay_seconds)
            self._store.mark_held(uploaded.job_id, now, reason, stage, credits_needed=credits_needed, held_until=until)
        logger.info(message)
        return SubmitResult(SubmitOutcome.HELD, uploaded.job_id)

    def _next_try(self, now: datetime, delay_seconds: int | None) -> datetime:
        """About when a held job is tried again: its queue message's delay (the queue adds up to
        half as much again, and a slot-held job's later wake-ups do not write it anew)."""
        delay = self._settings.hold_delay_seconds if delay_seconds is None else delay_seconds
        return now + timedelta(seconds=delay)

    def _read_mask_object(self, mask: MaskObject) -> Mask:
        """A mask the job names by URI: only inside the jobs bucket's inbox, read under this function's
        own policy (which reads nothing else)."""
        inbox = self._settings.inbox_prefix
        if mask.bucket != self._settings.jobs_bucket or not mask.key.startswith(inbox) or ".." in mask.key:
            raise JobRejected(
                "MASK_LOCATION_INVALID",
                f"an s3:// mask must be under s3://{self._settings.jobs_bucket}/{inbox} (the jobs bucket's inbox)",
            )
        max_mask = self._settings.max_mask_bytes
        stored = self._files.read(mask.key, max_mask)
        if stored is None:
            raise JobRejected("MASK_MISSING", f"the mask s3://{mask.bucket}/{mask.key} does not exist")
        if stored.data is None:
            raise JobRejected("MASK_TOO_LARGE", f"the mask is {stored.size} bytes; the limit is {max_mask}")
        declared = mask_type_of_key(mask.key) or normalise_media_type(stored.content_type)
        return validate_mask(stored.data, declared, max_mask)

    def accept_request(self, requested: RequestedJob) -> bool:
        """A job requested by an event: its file is written once as inbox/<job_id>.json (never over an
        existing one), and from there it is an upload like any other: that upload's notification
        starts it. False: the file was there already (a redelivery, or the id was taken)."""
        key = self._request_key(requested)
        written = self._files.write_new(key, requested.job_file(), "application/json")
        if not written:
            logger.info("the requested job's file exists already: a redelivery, nothing to do", extra={"key": key})
        return written

    def refuse_request(self, requested: RequestedJob, reason: str) -> SubmitResult:
        """A requested job whose body is not strict JSON (NaN, Infinity): no file of it can be written,
        so it is REJECTED here, as its file would be, while its id names no other job. JobRequestInvalid
        when the id cannot be its own."""
        key = self._request_key(requested)
        job_id = requested.job_id
        logger.append_keys(job_id=job_id)
        existing = self._store.get(job_id)
        if existing is not None and existing.status.is_final:  # a redelivery, or a finished job's id: no change
            ensure_error_document(self._files, ResultKeys(job_id, self._settings.results_prefix), existing)
            return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)
        if existing is not None or self._files.object_size(key) is not None:
            raise JobRequestInvalid(f"the job id {job_id!r} belongs to another job, and this request is not valid JSON")
        first_seen = self._store.record_received(job_id, self._clock())
        if not first_seen:
            raise JobRequestInvalid(f"the job id {job_id!r} was taken meanwhile, and this request is not valid JSON")
        error = JobError("SPEC_INVALID_JSON", f"the requested job is not valid JSON ({reason})", ErrorStage.INTAKE)
        return replace(self._reject(job_id, error), first_seen=True)

    def _request_key(self, requested: RequestedJob) -> str:
        """inbox/<job_id>.json, where a requested job's file is written; JobRequestInvalid when the id
        cannot name a job, or names a job folder's."""
        key = f"{self._settings.inbox_prefix}{requested.job_id}.json"
        uploaded = parse_inbox_key(key, self._settings.inbox_prefix)
        if uploaded is None or uploaded.kind is not InboxObjectKind.INLINE or uploaded.job_id != requested.job_id:
            raise JobRequestInvalid(f"the job id {requested.job_id[:200]!r} cannot name a job (see the job id rules)")
        if self._files.list_job_folder(requested.job_id):
            raise JobRequestInvalid(f"the job id {requested.job_id!r} belongs to a job folder in the inbox already")
        return key

    def _load_inputs(self, uploaded: InboxObject) -> tuple[JobSpec, Mask | None] | None:
        """The job's checked inputs; the mask is None when job.json gives it as regions."""
        max_mask = self._settings.max_mask_bytes
        if uploaded.kind is InboxObjectKind.INLINE:
            stored = self._files.read(uploaded.key, self._limits.max_spec_bytes + max_mask * 2)
            if stored is None:
                return None
            if stored.data is None:
                raise JobRejected("SPEC_TOO_LARGE", "the inline job file is too large")
            spec, inline_mask = parse_inline_job(stored.data, self._limits, max_mask)
            if inline_mask is None:
                return spec, None
            if isinstance(inline_mask, MaskObject):
                return spec, self._read_mask_object(inline_mask)
            return spec, validate_mask(inline_mask.data, inline_mask.declared_type, max_mask)
        files = job_file_kinds(self._files.list_job_folder(uploaded.job_id))
        specs, masks = files[InboxObjectKind.SPEC], files[InboxObjectKind.MASK]
        if len(masks) > 1:
            raise JobRejected("MASK_AMBIGUOUS", "the job folder holds more than one mask file; keep exactly one")
        if not specs:
            raise _Waiting(f"the job file {self._settings.inbox_prefix}{uploaded.job_id}/job.json")
        # job.json is read even before a mask file arrives: with regions it is the whole job.
        spec_file = self._files.read(specs[0].key, self._limits.max_spec_bytes)
        if spec_file is None:
            return None
        if spec_file.data is None:
            raise JobRejected("SPEC_TOO_LARGE", f"job.json is larger than {self._limits.max_spec_bytes} bytes")
        spec = parse_job_spec(spec_file.data, self._limits)
        if spec.mask_regions is not None:
            if masks:
                raise JobRejected(
                    "MASK_AMBIGUOUS", "job.json gives the mask as regions and the folder also holds a mask file"
                )
            return spec, None
        if not masks:
            raise _Waiting(f"the mask file {self._settings.inbox_prefix}{uploaded.job_id}/mask.(png|jpg|jpeg|webp)")
        mask_file = self._files.read(masks[0].key, max_mask)
        if mask_file is None:
            return None
        if mask_file.data is None:
            raise JobRejected("MASK_TOO_LARGE", f"the mask is {mask_file.size} bytes; the limit is {max_mask}")
        mask = validate_mask(mask_file.data, masks[0].declared_mask_type, max_mask)
        uploaded_as = normalise_media_type(mask_file.content_type)
        if uploaded_as and uploaded_as.startswith("image/") and uploaded_as != mask.media_type:
            raise JobRejected(
                "MASK_TYPE_MISMATCH", f"the mask was uploaded as {uploaded_as} but its content is {mask.media_type}"
            )
        return spec, mask

    def _reject(self, job_id: str, error: JobError) -> SubmitResult:
        if self._ends.reject(job_id, error):
            logger.warning("job rejected", extra={"error_code": error.code})
            return SubmitResult(SubmitOutcome.REJECTED, job_id, error=error)
        return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)

    def _fail_later_stage(self, job: Job, error: JobError) -> SubmitResult:
        """A chain's later stage found unusable: earlier stages were paid, so the job FAILED (not REJECTED)."""
        job_id = job.job_id
        between = JudgedStage(job.stage)  # only while no delivery has claimed (and so maybe paid) it
        if self._ends.fail(job_id, error, between, job.reservation, open_stage_paid=False):
            logger.warning("chained job failed before its next stage", extra={"error_code": error.code})
            return SubmitResult(SubmitOutcome.FAILED, job_id, error=error)
        return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)

    def _submit(
        self, uploaded: InboxObject, plan: _StagePlan, spec: JobSpec, existing: Job | None, time_left: TimeLeft | None
    ) -> SubmitResult:
        job_id = uploaded.job_id
        token = uuid.uuid4().hex
        secret = new_webhook_secret()
        # The first claim sets aside the whole chain's credits; later stages live on that reservation.
        reservation: CreditReservation | None
        if plan.first:
            price = self._settings.credits_of
            reservation = reserve(stages_from(plan.stage), lambda s: price(s.value), self._clock(), token)
        else:
            reservation = existing.reservation if existing is not None else None
        given_back = none_spent(reservation) if plan.first and reservation is not None else None
        short = self._balance_too_low(reservation.total) if plan.first and reservation is not None else None
        if short is not None and reservation is not None:
            if self._hold is None:
                raise ProviderUnavailable(short)
            return self._hold_back(
                self._hold,
                uploaded,
                f"job held back: {short}",
                HeldReason.PROVIDER_BALANCE_LOW,
                delay_seconds=self._credits_hold_delay(HeldReason.PROVIDER_BALANCE_LOW),
                credits_needed=reservation.total,
            )
        if not self._time_for_paid_call(time_left):
            # Reading the parent and the inputs took the time: Lambda could stop the invocation after
            # the claim or mid-call, leaving a paid task nobody knows about.
            return self._defer(uploaded)
        mask_key = ResultKeys(job_id, self._settings.results_prefix).mask if plan.mask is not None else None
        later = None if plan.first else plan.stage
        try:
            claimed = self._store.claim_submission(
                job_id,
                token,
                hash_webhook_secret(secret),
                spec.parent_task_id,
                spec.prompt,
                spec.metadata,
                self._clock(),
                stage=plan.stage,
                first=plan.first,
                inbox_key=uploaded.key,
                parent_image_url=plan.parent_image_url,
                mask_key=mask_key,
                reservation=reservation if plan.first else None,
            )
        except OverBudget as over:
            assert reservation is not None
            return self._over_budget(uploaded, over, reservation.total)
        except ProviderBusy:
            if self._hold is None:
                raise  # no queue to hold it in (a direct S3 trigger): let AWS retry the event
            return self._hold_back(
                self._hold,
                uploaded,
                "all provider slots taken; job held back",
                HeldReason.PROVIDER_SLOTS_FULL,
                stage=later,
            )
        if not claimed:
            return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)
        if plan.first and reservation is not None:
            metrics.add_metric(name="CreditsReserved", unit=MetricUnit.Count, value=reservation.total)
        try:
            if plan.mask is not None and mask_key is not None:
                # Only after a won claim: a delivery that lost the claim, or was held, never replaces
                # the mask that was sent. A failed write is still before sending: the claim goes back.
                self._store_sent_mask(mask_key, plan.mask)
            task_id = self._apiframe.submit(self._stage_request(job_id, plan, secret))
        except RequestNotSent:
            # Nothing reached APIFRAME (e.g. the API key could not be read): give the claim back so the
            # redelivered event can try again.
            self._give_back(job_id, token, plan, given_back)
            raise
        except ProviderRejected as exc:
            error = JobError(exc.code, exc.message, ErrorStage.SUBMIT)
            self._ends.fail(job_id, error, JudgedStage(plan.stage, claim=token), reservation, open_stage_paid=False)
            logger.warning("APIFRAME rejected the submission", extra={"provider_status": exc.status})
            return SubmitResult(SubmitOutcome.FAILED, job_id, error=error)
        except SubmissionAmbiguous as exc:
            return self._record_ambiguous(job_id, token, str(exc))
        except ProviderUnavailable:
            # Known not accepted (429/408/503/unreachable past the retry budget): give the claim back.
            # Held in the queue, a long provider outage never walks the message into the DLQ.
            self._give_back(job_id, token, plan, given_back)
            if self._hold is None:
                raise
            self._hold(uploaded.key)
            now = self._clock()
            held_until = self._next_try(now, None)
            self._store.mark_held(job_id, now, HeldReason.PROVIDER_UNAVAILABLE, later, held_until=held_until)
            logger.warning("APIFRAME unavailable; job held back for a later attempt")
            return SubmitResult(SubmitOutcome.HELD, job_id)
        except Exception as exc:
            # Not known to have happened before sending (a bug, an error while reading the answer): the
            # task may exist and be paid for, so the claim is kept and the request never resent. (A
            # BaseException such as SystemExit leaves the claim too; the reconciler ends the job later.)
            logger.exception("unexpected error during submission; treated as ambiguous, not resending")
            return self._record_ambiguous(job_id, token, f"unexpected {type(exc).__name__} during submission")
        logger.append_keys(task_id=task_id)  # from here on, every line (an error too) names the paid task
        if self._balance is not None:
            self._balance.note_spent(self._settings.credits_of(plan.stage.value))
        try:
            recorded = self._store.mark_submitted(job_id, token, task_id, self._clock(), plan.stage)
        except Exception:
            logger.exception("the paid task could not be recorded on the job; its webhook can still complete it")
            raise
        if not recorded:
            logger.error("the paid task could not be recorded on the job; its webhook can still complete it")
        logger.info("stage submitted")
        return SubmitResult(SubmitOutcome.SUBMITTED, job_id, task_id)

    def _store_sent_mask(self, key: str, mask: BinaryMask) -> None:
        try:
            self._files.write_bytes(key, mask.data, mask.media_type)
        except Exception as exc:
            raise RequestNotSent(f"the mask could not be stored beside the results ({type(exc).__name__})") from exc

    def _time_for_paid_call(self, time_left: TimeLeft | None) -> bool:
        return time_left is None or time_left() >= self._settings.seconds_for_paid_call

    def _defer(self, uploaded: InboxObject) -> SubmitResult:
        self.defer(uploaded.key)
        logger.info("too little time left in this invocation for a paid call; upload deferred, untouched")
        return SubmitResult(SubmitOutcome.DEFERRED, uploaded.job_id)

    def _give_back(self, job_id: str, token: str, plan: _StagePlan, returned: Settlement | None) -> None:
        """The provider certainly did not take the request: the claim, its slot and (a first stage's)
        reserved credits go back."""
        if self._store.release_claim(job_id, token, self._clock(), first=plan.first, returned=returned) and returned:
            metrics.add_metric(name="CreditsReturned", unit=MetricUnit.Count, value=returned.returned)

    def _stage_request(self, job_id: str, plan: _StagePlan, secret: str) -> StageRequest:
        try:
            return plan.build(self.webhook_url(job_id, plan.stage), secret)
        except Exception as exc:  # still before the client is even called
            raise RequestNotSent(f"the {plan.stage} request could not be built ({type(exc).__name__})") from exc

    def _record_ambiguous(self, job_id: str, token: str, reason: str) -> SubmitResult:
        """The job stays SUBMITTED and flagged: its webhook (carrying the job's secret) can still complete
        it; otherwise the reconciler fails it after the ambiguity window. It is never resent."""
        error = JobError(
            "SUBMIT_AMBIGUOUS",
            f"{reason}. The task may exist at APIFRAME; it was not resent. The job completes if its webhook "
            "arrives, otherwise it fails after the ambiguity window.",
            ErrorStage.SUBMIT,
        )
        self._store.mark_submit_ambiguous(job_id, token, error, self._clock())
        logger.error("submission outcome unknown; not resending", extra={"error_code": error.code})
        return SubmitResult(SubmitOutcome.AMBIGUOUS, job_id, error=error)

    def defer(self, key: str) -> None:
        """Put an upload back on the queue to be handled by a later invocation."""
        if self._hold is None:
            raise TimeoutError("too little time left in this invocation to submit safely")
        self._hold(key)

    def webhook_url(self, job_id: str, stage: JobStage = JobStage.INPAINT) -> str | None:
        if not self._settings.webhook_base_url:
            return None
        return f"{self._settings.webhook_base_url}/{webhook_token(job_id, stage.value)}"


__all__ = ["JobSubmitter", "ProviderUnavailable", "SubmitOutcome", "SubmitResult"]
