"""The APIFRAME key, read from Secrets Manager or an SSM SecureString and cached by Powertools
Parameters, so it never sits in a function's environment in plain text."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from vary_region.settings import Settings, SettingsError

CACHE_SECONDS = 300


def api_key_reader(settings: Settings) -> Callable[[], str]:
    """A function returning the key. Powertools Parameters is imported on the first read: many
    invocations (progress webhooks, rejected uploads) never need the key."""
    if settings.api_key_secret_id:
        secret_id = settings.api_key_secret_id

        def from_secret() -> str:
            from aws_lambda_powertools.utilities import parameters

            return _clean(parameters.get_secret(secret_id, max_age=CACHE_SECONDS))

        return from_secret
    if settings.api_key_parameter:
        name = settings.api_key_parameter

        def from_parameter() -> str:
            from aws_lambda_powertools.utilities import parameters

            return _clean(parameters.get_parameter(name, decrypt=True, max_age=CACHE_SECONDS))

        return from_parameter
    raise SettingsError("set APIFRAME_API_KEY_SECRET_ID or APIFRAME_API_KEY_PARAMETER")


def _clean(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    key = str(value or "").strip()
    if key.startswith("{"):  # a secret created in the console is often a JSON object
        with contextlib.suppress(ValueError, AttributeError):
            key = str(json.loads(key).get("api_key", "")).strip()
    if not key:
        raise SettingsError("the APIFRAME API key secret is empty")
    return key
