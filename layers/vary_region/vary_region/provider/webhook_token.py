"""The last segment of a job's webhook URL: an opaque, URL-safe token that names the job.

Job ids may hold `?`, `#`, `%`, spaces and any unicode; HTTP fronts are reported to decode paths
and cut them at `?`. A token of base64url letters survives every front unchanged. The token is not
a secret: the webhook secret (or, in v2, the signature) is what authenticates a delivery.

v2 echoes no secret, so there the stage's secret rides in the URL after a `~` (unreserved in URLs,
not a base64url letter): `<token>~<secret>`, a second factor beside the provider's signature.
"""

from __future__ import annotations

import base64
import binascii

from vary_region.core.keys import is_valid_job_id

# Marks the token form, so a URL made before tokens existed (the raw job id) is still recognised.
_PREFIX = "j-"


# The stage of a chained job follows the id after a dot (not a base64url letter): one URL per stage.
_STAGE_SEPARATOR = "."
_PLAIN_STAGE = "inpaint"
_SECRET_SEPARATOR = "~"  # noqa: S105 - a separator, not a secret


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


def url_with_secret(url: str, secret: str) -> str:
    """A webhook URL that carries its stage's secret (for a provider that echoes none)."""
    return f"{url}{_SECRET_SEPARATOR}{secret}"


def split_url_secret(segment: str) -> tuple[str, str | None]:
    """(token, the secret it carries, if any). Only a token carries one: a URL made before tokens
    was the raw job id, which may itself hold a `~`."""
    token, separator, secret = segment.partition(_SECRET_SEPARATOR)
    if separator and secret and parse_webhook_token(token) is not None:
        return token, secret
    return segment, None
