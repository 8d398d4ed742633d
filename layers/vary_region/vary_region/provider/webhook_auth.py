"""Webhook secrets: random per job stage, stored only as a hash, compared in constant time.

v1 echoes the secret back in a header. v2 echoes nothing and signs the raw body instead, with no
timestamp: so a v2 delivery must carry both the provider's signature and the job stage's secret,
which travels in its webhook URL (webhook_token.url_with_secret). A replayed delivery passes both;
the job's state machine, which never moves backwards, is what makes a replay change nothing.

The provider's page (docs-v2.apiframe.ai/docs/webhooks) says only that the signature is an
HMAC-SHA256 of the body whose signing secret is "SHA256(<API key>)": not whether that secret is the
digest's bytes or its hex string, nor whether the header is hex or base64, nor whether it has a
`sha256=` prefix. Every combination of those readings is accepted (eight forms, each still keyed by
the real API key), and nothing else: the raw key as HMAC key is not one of them, the page never says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from vary_region.provider.task_result import TaskResult, parse_task_result

SECRET_HEADER = "x-webhook-secret"  # noqa: S105 - a header name, not a secret
SIGNATURE_HEADER = "x-webhook-signature"
SIGNATURE_PREFIX = "sha256="


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_webhook_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _secret_matches(presented: str | None, secret_hash: str) -> bool:
    if not presented or not secret_hash:
        return False
    return hmac.compare_digest(hash_webhook_secret(presented), secret_hash)


class SharedSecretVerifier:
    """APIFRAME v1: the secret we sent at submit time is echoed back in a header."""

    def verify(self, headers: Mapping[str, str], body: bytes, url_secret: str | None, secret_hash: str) -> bool:
        return _secret_matches(_header(headers, SECRET_HEADER), secret_hash)

    def parse(self, payload: Any) -> TaskResult:
        return parse_task_result(payload)


def webhook_signature(api_key: str, body: bytes) -> str:
    """v2's `X-Webhook-Signature` in one of the forms it may take: `sha256=<hex>`, keyed with the digest's bytes."""
    return SIGNATURE_PREFIX + _macs(api_key, body)[0].hex()


def _macs(api_key: str, body: bytes) -> tuple[bytes, bytes]:
    """The body's HMAC-SHA256 under both readings of "the SHA-256 of the API key": its bytes, its hex."""
    digest = hashlib.sha256(api_key.encode("utf-8"))
    return (
        hmac.new(digest.digest(), body, hashlib.sha256).digest(),
        hmac.new(digest.hexdigest().encode("ascii"), body, hashlib.sha256).digest(),
    )


_HEX = re.compile(r"[0-9a-fA-F]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{43}=")


def presented_mac(header: str | None) -> bytes | None:
    """The 32 bytes a signature header carries, or None for anything but one of the accepted forms.

    The provider documents neither the encoding nor a prefix: `[sha256=](<64 hex> | <44 base64>)`.
    A hex form is 64 characters and a base64 one 44, so no header can be read both ways.
    """
    value = (header or "").strip()
    if value[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        value = value[len(SIGNATURE_PREFIX) :]
    if _HEX.fullmatch(value):
        return bytes.fromhex(value)
    if _BASE64.fullmatch(value):
        return base64.b64decode(value, validate=True)
    return None


def signature_matches(api_key: str, body: bytes, header: str | None) -> bool:
    presented = presented_mac(header)
    if presented is None:
        return False
    # Both keys' MACs are compared, each in constant time, whatever the first one gives.
    matches = [hmac.compare_digest(presented, mac) for mac in _macs(api_key, body)]
    return any(matches)


class SignedWebhookVerifier:
    """APIFRAME v2: the provider's signature over the raw body, and the job stage's URL secret."""

    def __init__(self, api_key: Callable[[], str]) -> None:
        self._api_key = api_key  # read (and cached) on the first delivery, not at cold start

    def verify(self, headers: Mapping[str, str], body: bytes, url_secret: str | None, secret_hash: str) -> bool:
        # The stage's secret first: a caller without it learns nothing and never costs a read of the key
        # (an unreadable key then fails the provider's own deliveries only, which it retries).
        if not _secret_matches(url_secret, secret_hash):
            return False
        return signature_matches(self._api_key(), body, _header(headers, SIGNATURE_HEADER))

    def parse(self, payload: Any) -> TaskResult:
        from vary_region.provider.apiframe_v2 import parse_v2_job

        return parse_v2_job(payload)
