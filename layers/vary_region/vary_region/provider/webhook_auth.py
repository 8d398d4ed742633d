"""Webhook secrets: random per job stage, stored only as a hash, compared in constant time.

v1 echoes the secret back in a header. v2 echoes nothing and signs the raw body instead, with no
timestamp: so a v2 delivery must carry both the provider's signature and the job stage's secret,
which travels in its webhook URL (webhook_token.url_with_secret). A replayed delivery passes both;
the job's state machine, which never moves backwards, is what makes a replay change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
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
    """v2's `X-Webhook-Signature`: HMAC-SHA256 of the raw body, keyed with the SHA-256 digest of the key."""
    signing_key = hashlib.sha256(api_key.encode("utf-8")).digest()
    return SIGNATURE_PREFIX + hmac.new(signing_key, body, hashlib.sha256).hexdigest()


class SignedWebhookVerifier:
    """APIFRAME v2: the provider's signature over the raw body, and the job stage's URL secret."""

    def __init__(self, api_key: Callable[[], str]) -> None:
        self._api_key = api_key  # read (and cached) on the first delivery, not at cold start

    def verify(self, headers: Mapping[str, str], body: bytes, url_secret: str | None, secret_hash: str) -> bool:
        # The stage's secret first: a caller without it learns nothing and never costs a read of the key
        # (an unreadable key then fails the provider's own deliveries only, which it retries).
        if not _secret_matches(url_secret, secret_hash):
            return False
        presented = (_header(headers, SIGNATURE_HEADER) or "").strip().lower()
        expected = webhook_signature(self._api_key(), body)
        return hmac.compare_digest(presented.encode("ascii", "replace"), expected.encode("ascii"))

    def parse(self, payload: Any) -> TaskResult:
        from vary_region.provider.apiframe_v2 import parse_v2_job

        return parse_v2_job(payload)
