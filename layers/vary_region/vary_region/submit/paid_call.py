"""A won claim's one paid request, and what its answer makes of the job.

The submitter (submitter.py) wins the stage's claim; from there this module sends the stage's one
paid request and records what came of it: the task (SUBMITTED), a refusal (FAILED), an answer that
leaves it unknown whether the task exists (SUBMIT_AMBIGUOUS: the claim is kept, never resent), or
certainly nothing taken (the claim, its slot and its credits go back; the job is held or retried).

Every paid request carries an idempotency key made from the job, the stage and the claim: the
attempts of one claim's call share it, and a new claim (after one given back) has a new one. The
provider decides what the key is worth (see provider/port.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

from vary_region.aws.job_files import JobFiles
from vary_region.core.credits import CreditReservation, Settlement, none_spent
from vary_region.core.errors import (
    ErrorStage,
    JobError,
    ProviderRejected,
    ProviderUnavailable,
    RequestNotSent,
    SubmissionAmbiguous,
)
from vary_region.core.keys import InboxObject, ResultKeys
from vary_region.core.stages import JobStage
from vary_region.endings import JobEndings
from vary_region.observability import MetricUnit, logger, metrics
from vary_region.provider.balance import ProviderBalance
from vary_region.provider.port import Provider
from vary_region.provider.stage_requests import StageRequest
from vary_region.settings import Settings
from vary_region.store.job_table import JobTable, JudgedStage
from vary_region.submit.holds import HeldReason, Holder
from vary_region.submit.mask import BinaryMask
from vary_region.submit.outcome import SubmitOutcome, SubmitResult
from vary_region.submit.plan import StagePlan

# Keys are UUIDs (the form providers' idempotency keys take) named by the job, stage and claim.
_KEY_NAMESPACE = uuid.UUID("6f1d2c1e-3b0a-5d47-9a8e-7c4b2f0e9d15")


def idempotency_key(job_id: str, stage: JobStage, claim: str) -> str:
    """The key of a stage's paid request under one claim: the same for every attempt of that claim's
    call, another for any other job, stage or claim."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{job_id}/{stage.value}/{claim}"))


class PaidCall:
    def __init__(
        self,
        settings: Settings,
        store: JobTable,
        files: JobFiles,
        apiframe: Provider,
        ends: JobEndings,
        holder: Holder | None,
        webhook_url: Callable[[str, JobStage], str | None],
        clock: Callable[[], datetime],
        balance: ProviderBalance | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._apiframe = apiframe
        self._ends = ends
        self._holder = holder
        self._webhook_url = webhook_url
        self._clock = clock
        self._balance = balance

    def send(
        self, uploaded: InboxObject, plan: StagePlan, token: str, secret: str, reservation: CreditReservation | None
    ) -> SubmitResult:
        """The claim `token` is won: the stage's one paid request, then its task recorded on the job."""
        job_id = uploaded.job_id
        given_back = None
        if plan.first and reservation is not None:
            given_back = none_spent(reservation)
            metrics.add_metric(name="CreditsReserved", unit=MetricUnit.Count, value=reservation.total)
        try:
            if plan.mask is not None:
                # Only after a won claim: a delivery that lost the claim, or was held, never replaces
                # the mask that was sent. A failed write is still before sending: the claim goes back.
                self._store_sent_mask(ResultKeys(job_id, self._settings.results_prefix).mask, plan.mask)
            request = self._stage_request(job_id, plan, secret)
            task_id = self._apiframe.submit(request, idempotency_key(job_id, plan.stage, token))
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
            if self._holder is None:
                raise
            message = "APIFRAME unavailable; job held back for a later attempt"
            return self._holder.hold_back(
                uploaded, message, HeldReason.PROVIDER_UNAVAILABLE, stage=plan.later, warning=True
            )
        except Exception as exc:
            # Not known to have happened before sending (a bug, an error while reading the answer): the
            # task may exist and be paid for, so the claim is kept and the request never resent. (A
            # BaseException such as SystemExit leaves the claim too; the reconciler ends the job later.)
            logger.exception("unexpected error during submission; treated as ambiguous, not resending")
            return self._record_ambiguous(job_id, token, f"unexpected {type(exc).__name__} during submission")
        return self._record_submitted(job_id, token, task_id, plan)

    def _record_submitted(self, job_id: str, token: str, task_id: str, plan: StagePlan) -> SubmitResult:
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

    def _give_back(self, job_id: str, token: str, plan: StagePlan, returned: Settlement | None) -> None:
        """The provider certainly did not take the request: the claim, its slot and (a first stage's)
        reserved credits go back."""
        if self._store.release_claim(job_id, token, self._clock(), first=plan.first, returned=returned) and returned:
            metrics.add_metric(name="CreditsReturned", unit=MetricUnit.Count, value=returned.returned)

    def _stage_request(self, job_id: str, plan: StagePlan, secret: str) -> StageRequest:
        try:
            return plan.build(self._webhook_url(job_id, plan.stage), secret)
        except Exception as exc:  # still before the client is even called
            raise RequestNotSent(f"the {plan.stage} request could not be built ({type(exc).__name__})") from exc

    def _record_ambiguous(self, job_id: str, token: str, reason: str) -> SubmitResult:
        """The job stays SUBMITTED and flagged: its webhook (carrying the job's secret) can still complete
        it; otherwise the reconciler fails it after the ambiguity window. It is never sent again."""
        error = JobError(
            "SUBMIT_AMBIGUOUS",
            f"{reason}. The task may exist at APIFRAME; it will not be sent again. The job completes if its webhook "
            "arrives, otherwise it fails after the ambiguity window.",
            ErrorStage.SUBMIT,
        )
        self._store.mark_submit_ambiguous(job_id, token, error, self._clock())
        logger.error("submission outcome unknown; not resending", extra={"error_code": error.code})
        return SubmitResult(SubmitOutcome.AMBIGUOUS, job_id, error=error)
