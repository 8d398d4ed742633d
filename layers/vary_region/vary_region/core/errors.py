"""Domain errors. Each carries a machine-readable code that users see in DynamoDB and error.json."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorStage(StrEnum):
    """Where in the pipeline a job stopped."""

    INTAKE = "intake"
    SUBMIT = "submit"
    PROVIDER = "provider"
    COPY = "copy"
    RECONCILE = "reconcile"


@dataclass(frozen=True)
class JobError:
    """Why a job failed or was rejected: the machine-readable error in DynamoDB and error.json."""

    code: str
    message: str
    stage: ErrorStage

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "stage": str(self.stage)}


class JobRejected(Exception):
    """The user's input is unusable: the job is REJECTED and nothing is sent to APIFRAME."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.error = JobError(code=code, message=message, stage=ErrorStage.INTAKE)


class ProviderRejected(Exception):
    """APIFRAME refused a request for good (4xx other than 408/429): retrying would not help."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"APIFRAME answered {status}: {message}")
        self.status = status
        self.message = message
        self.code = code or "PROVIDER_REJECTED"  # the job's error code (v2 names some refusals)


class ProviderUnavailable(Exception):
    """APIFRAME did not answer usefully within the retry budget (429, 408, 5xx, connection errors).

    Raised so that AWS redelivers the event later; the request is known not to have been accepted.
    """


class SubmissionAmbiguous(Exception):
    """The submit request may have reached APIFRAME (e.g. a read timeout): it must not be resent."""


class RequestNotSent(Exception):
    """A call to APIFRAME failed before any byte of it was sent (the API key could not be read, the
    request could not be built): the provider certainly knows nothing of it.

    Only this, and a refusal the provider answered, may give a job's submission claim back; any other
    failure after the claim may hide a paid task and is treated as SubmissionAmbiguous.
    """


class ImageCopyError(Exception):
    """A result image could not be copied; `permanent` says whether retrying the same URL can help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class UnsafeImageUrl(ImageCopyError):
    """A result URL is outside the allowlist (scheme, host, IP literal, private address)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)
