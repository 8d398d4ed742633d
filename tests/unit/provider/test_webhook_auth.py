"""Webhook secrets: random per job, stored only as a hash, checked on every call."""

from __future__ import annotations

import pytest
from vary_region.provider.webhook_auth import SharedSecretVerifier, hash_webhook_secret, new_webhook_secret

verifier = SharedSecretVerifier()
BODY = b'{"task_id": "t1", "status": "processing", "percentage": "40"}'


@pytest.fixture()
def secret() -> str:
    return new_webhook_secret()


@pytest.mark.parametrize("header", ["x-webhook-secret", "X-Webhook-Secret", "X-WEBHOOK-SECRET"])
def test_given_the_right_secret_in_any_header_case_when_verified_then_it_passes(secret, header):
    headers = {"content-type": "application/json", header: secret}

    assert verifier.verify(headers, BODY, None, hash_webhook_secret(secret)) is True


def test_given_a_wrong_secret_when_verified_then_it_fails(secret):
    assert verifier.verify({"x-webhook-secret": new_webhook_secret()}, BODY, None, hash_webhook_secret(secret)) is False


@pytest.mark.parametrize("presented", ["", " ", "x"])
def test_given_an_empty_or_near_empty_secret_when_verified_then_it_fails(secret, presented):
    assert verifier.verify({"x-webhook-secret": presented}, BODY, None, hash_webhook_secret(secret)) is False


def test_given_a_secret_with_extra_characters_when_verified_then_it_fails(secret):
    stored = hash_webhook_secret(secret)

    assert verifier.verify({"x-webhook-secret": secret + " "}, BODY, None, stored) is False
    assert verifier.verify({"x-webhook-secret": secret[:-1]}, BODY, None, stored) is False


def test_given_no_secret_header_when_verified_then_it_fails(secret):
    headers = {"content-type": "application/json", "authorization": secret, "x-webhook-signature": secret}

    assert verifier.verify(headers, BODY, None, hash_webhook_secret(secret)) is False


@pytest.mark.parametrize("stored", ["", None])
def test_given_no_stored_hash_when_verified_then_it_fails_even_for_an_empty_secret(stored):
    assert verifier.verify({"x-webhook-secret": ""}, BODY, None, stored) is False
    assert verifier.verify({"x-webhook-secret": "anything"}, BODY, None, stored) is False


def test_given_the_stored_value_is_the_plain_secret_when_verified_then_it_fails(secret):
    # The table holds hashes: presenting the stored value itself must not work, and neither must a plain secret.
    stored = hash_webhook_secret(secret)

    assert verifier.verify({"x-webhook-secret": stored}, BODY, None, stored) is False
    assert verifier.verify({"x-webhook-secret": secret}, BODY, None, secret) is False


def test_given_a_secret_when_hashed_then_the_hash_is_stable_and_does_not_reveal_it(secret):
    stored = hash_webhook_secret(secret)

    assert stored == hash_webhook_secret(secret)
    assert stored != secret and secret not in stored
    assert len(stored) == 64 and all(c in "0123456789abcdef" for c in stored)
    assert hash_webhook_secret(secret + "x") != stored


def test_given_new_secrets_when_generated_then_they_are_long_random_and_header_safe():
    secrets = {new_webhook_secret() for _ in range(50)}

    assert len(secrets) == 50
    for value in secrets:
        assert len(value) >= 32
        assert value.isascii() and value.isprintable() and " " not in value


def test_given_the_body_changes_when_verified_then_only_the_secret_matters(secret):
    # v1 webhooks echo a secret; nothing is signed, so any body with the right secret passes the check.
    stored = hash_webhook_secret(secret)

    assert verifier.verify({"x-webhook-secret": secret}, b"", None, stored) is True
    assert verifier.verify({"x-webhook-secret": secret}, b"not json", None, stored) is True
