"""From an uploaded file to the job's one paid submission.

Pairs job.json with its mask (in either upload order; a job.json giving the mask as regions is a
whole job alone), validates both, reads the parent task (Fetch, and its image's size from the first
bytes) and fits the mask to it, all before any credit is spent; then wins the job's single
submission claim with a conditional write, and only then calls APIFRAME. Redelivered and
concurrent events lose the claim and do nothing. Once claimed, the claim is given back only when
APIFRAME certainly did not take the request; every other failure leaves the job flagged and never
resent.

What stays here is the claim: who may pay for a stage, and when. The free work before it is
delegated: reading the inputs (inputs.py), checking each stage (plan.py), whether and how a job is
held (holds.py), a job its checks stop (setbacks.py), requested jobs (requested.py); so is the work
after it: the won claim's one paid call and its recording (paid_call.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from vary_region.aws.job_files import JobFiles
from vary_region.core.credits import CreditReservation, OverBudget, reserve
from vary_region.core.errors import JobRejected, ProviderUnavailable
from vary_region.core.job import Job, utc_now
from vary_region.core.keys import InboxObject, ResultKeys, parse_inbox_key
from vary_region.core.stages import JobStage, stages_from
from vary_region.endings import JobEndings, ensure_error_document
from vary_region.observability import logger, tracer
from vary_region.provider.balance import ProviderBalance
from vary_region.provider.port import Provider
from vary_region.provider.webhook_auth import hash_webhook_secret, new_webhook_secret
from vary_region.provider.webhook_token import webhook_token
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, ProviderBusy
from vary_region.submit.holds import HeldReason, Hold, Holder, HoldPolicy
from vary_region.submit.inputs import JobInputs, WaitingForFiles
from vary_region.submit.job_spec import JobSpec
from vary_region.submit.outcome import SubmitOutcome, SubmitResult
from vary_region.submit.paid_call import PaidCall
from vary_region.submit.parent import ParentNotReady, ParentReader
from vary_region.submit.plan import StagePlan, StagePlanner
from vary_region.submit.requested import JobRequests, RequestedJob
from vary_region.submit.setbacks import Setbacks
from vary_region.submit.task_token import TaskTokens

# The seconds left in the Lambda invocation (LambdaContext.get_remaining_time_in_millis, in seconds).
TimeLeft = Callable[[], float]


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
        self._clock = clock
        self._ends = JobEndings(store, files, settings.results_prefix, clock)
        self._inputs = JobInputs(settings, files, TaskTokens(settings.caller_state_machine_arns, store).record)
        self._planner = StagePlanner(parents)
        self._holds = HoldPolicy(settings, store, clock, balance)
        self._holder = Holder(hold, store, self._holds, clock) if hold is not None else None
        self._setbacks = Setbacks(settings, store, self._ends, self._holds, self._holder, clock)
        self._requests = JobRequests(settings, store, files, clock, self._setbacks.reject)
        self._paid_call = PaidCall(
            settings, store, files, apiframe, self._ends, self._holder, self.webhook_url, clock, balance
        )

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
        if self._holder is not None and existing is not None:
            # A held job's wake-up while it must still wait: holding it again costs a read of the slot
            # counter, the ledger or the balance, not a re-read and re-validation of its mask.
            still = self._holds.on_wake_up(existing)
            if still is not None:
                return self._holder.again(uploaded, still)
        first_seen = existing is None and self._store.record_received(job_id, self._clock())
        try:
            result = self._check_and_submit(uploaded, existing, time_left)
        except WaitingForFiles as waiting:
            result = self._setbacks.files_missing(job_id, waiting, existing)
        except JobRejected as rejection:
            result = self._setbacks.refused(job_id, rejection.error, existing)
        except ParentNotReady as waiting:
            result = self._setbacks.parent_not_ready(uploaded, waiting, existing)
        return replace(result, first_seen=first_seen)

    def _check_and_submit(
        self, uploaded: InboxObject, existing: Job | None, time_left: TimeLeft | None
    ) -> SubmitResult:
        inputs = self._inputs.load(uploaded)
        if inputs is None and existing is not None and existing.was_submitted:
            raise WaitingForFiles("its job files, which are gone from the inbox")
        if inputs is None:
            return SubmitResult(SubmitOutcome.WAITING, uploaded.job_id)
        spec, mask = inputs
        # The job's state, never the job file (which its owner may have changed since), says
        # whether this is its first claim: a chain under way goes on with its open stage.
        if existing is not None and existing.was_submitted:
            stage, first = existing.stage, False
        else:
            stage, first = spec.first_stage, True
        logger.append_keys(stage=str(stage))
        plan = self._planner.plan(stage, first, spec, mask, existing)
        return self._submit(uploaded, plan, spec, existing, time_left)

    # --- the claim: won once, then the stage's one paid call (paid_call.py) -------------------------

    def _submit(
        self, uploaded: InboxObject, plan: StagePlan, spec: JobSpec, existing: Job | None, time_left: TimeLeft | None
    ) -> SubmitResult:
        job_id = uploaded.job_id
        token = uuid.uuid4().hex
        secret = new_webhook_secret()
        reservation = self._reservation(plan, existing, token)
        short = self._holds.balance_too_low(reservation.total) if plan.first and reservation is not None else None
        if short is not None and reservation is not None:
            return self._setbacks.balance_low(uploaded, short, reservation.total)
        if not self._time_for_paid_call(time_left):
            # Reading the parent and the inputs took the time: Lambda could stop the invocation after
            # the claim or mid-call, leaving a paid task nobody knows about.
            return self._defer(uploaded)
        mask_key = ResultKeys(job_id, self._settings.results_prefix).mask if plan.mask is not None else None
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
            return self._setbacks.over_budget(uploaded, over, reservation.total)
        except ProviderBusy:
            if self._holder is None:
                raise  # no queue to hold it in (a direct S3 trigger): let AWS retry the event
            message = "all provider slots taken; job held back"
            return self._holder.hold_back(uploaded, message, HeldReason.PROVIDER_SLOTS_FULL, stage=plan.later)
        if not claimed:
            return SubmitResult(SubmitOutcome.ALREADY_HANDLED, job_id)
        return self._paid_call.send(uploaded, plan, token, secret, reservation)

    def _reservation(self, plan: StagePlan, existing: Job | None, token: str) -> CreditReservation | None:
        """The first claim sets aside the whole chain's credits; later stages live on that reservation."""
        if plan.first:
            price = self._settings.credits_of
            return reserve(stages_from(plan.stage), lambda s: price(s.value), self._clock(), token)
        return existing.reservation if existing is not None else None

    def _time_for_paid_call(self, time_left: TimeLeft | None) -> bool:
        return time_left is None or time_left() >= self._settings.seconds_for_paid_call

    def _defer(self, uploaded: InboxObject) -> SubmitResult:
        self.defer(uploaded.key)
        logger.info("too little time left in this invocation for a paid call; upload deferred, untouched")
        return SubmitResult(SubmitOutcome.DEFERRED, uploaded.job_id)

    # --- used by the handler ----------------------------------------------------------------------

    def accept_request(self, requested: RequestedJob) -> bool:
        """See JobRequests.accept: the requested job's file written once into the inbox."""
        return self._requests.accept(requested)

    def refuse_request(self, requested: RequestedJob, reason: str) -> SubmitResult:
        """See JobRequests.refuse: a requested job that is not strict JSON, REJECTED."""
        return self._requests.refuse(requested, reason)

    def defer(self, key: str) -> None:
        """Put an upload back on the queue to be handled by a later invocation."""
        if self._hold is None:
            raise TimeoutError("too little time left in this invocation to submit safely")
        self._hold(key)

    def webhook_url(self, job_id: str, stage: JobStage = JobStage.INPAINT) -> str | None:
        if not self._settings.webhook_base_url:
            return None
        return f"{self._settings.webhook_base_url}/{webhook_token(job_id, stage.value)}"


__all__ = ["HeldReason", "JobSubmitter", "ProviderUnavailable", "SubmitOutcome", "SubmitResult"]
