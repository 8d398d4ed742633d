"""Webhook secrets: random per job, stored only as a hash, compared in constant time.

Verification sits behind the small `WebhookVerifier` interface so that the v2 API's signed
webhooks (HMAC of the body) can be added without touching the handler.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Protocol

SECRET_HEADER = "x-webhook-secret"  # noqa: S105 - a header name, not a secret


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_webhook_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class WebhookVerifier(Protocol):
    def verify(self, headers: Mapping[str, str], body: bytes, stored_secret_hash: str) -> bool: ...


class SharedSecretVerifier:
    """APIFRAME v1: the secret we sent at submit time is echoed back in a header."""

    def verify(self, headers: Mapping[str, str], body: bytes, stored_secret_hash: str) -> bool:
        presented = next((v for k, v in headers.items() if k.lower() == SECRET_HEADER), None)
        if not presented or not stored_secret_hash:
            return False
        return hmac.compare_digest(hash_webhook_secret(presented), stored_secret_hash)
