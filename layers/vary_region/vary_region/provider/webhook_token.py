"""The last segment of a job's webhook URL: an opaque, URL-safe token that names the job.

Job ids may hold `?`, `#`, `%`, spaces and any unicode; HTTP fronts are reported to decode paths
and cut them at `?`. A token of base64url letters survives every front unchanged. The token is not
a secret: the webhook secret (or, in v2, the signature) is what authenticates a delivery.
"""

from __future__ import annotations

import base64
import binascii

from vary_region.intake.job_keys import is_valid_job_id

# Marks the token form, so a URL made before tokens existed (the raw job id) is still recognised.
_PREFIX = "j-"


# The stage of a chained job follows the id after a dot (not a base64url letter): one URL per stage.
_STAGE_SEPARATOR = "."
_PLAIN_STAGE = "inpaint"


def webhook_token(job_id: str, stage: str = _PLAIN_STAGE) -> str:
    token = _PREFIX + base64.urlsafe_b64encode(job_id.encode("utf-8")).decode("ascii").rstrip("=")
    return token if stage == _PLAIN_STAGE else f"{token}{_STAGE_SEPARATOR}{stage}"


def job_id_from_token(token: str) -> str | None:
    """The job id a token names; None if `token` is not one (then it may be a raw job id)."""
    parsed = parse_webhook_token(token)
    return parsed[0] if parsed else None


def parse_webhook_token(token: str) -> tuple[str, str] | None:
    """(job id, stage) a token names; None if `token` is not one. The plain form is the inpaint's."""
    if not token.startswith(_PREFIX):
        return None
    encoded, _, stage = token[len(_PREFIX) :].partition(_STAGE_SEPARATOR)
    stage = stage or _PLAIN_STAGE
    try:
        job_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    # Only the canonical spelling of an id is its token: no second name for the same job.
    if not is_valid_job_id(job_id) or webhook_token(job_id, stage) != token:
        return None
    return job_id, stage
