"""The doctor's checks that need no probe job: the API key (set, and accepted by APIFRAME through a
free account read), the webhook route (an unsigned webhook is refused with 401) and the alarm
topic's subscribers. The key is never printed."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from vary_region_cli.config import Target
from vary_region_cli.doctor import Check, Outcome, StackFacts, extra

# template.yaml's ApiKeySecret starts with this until the user puts the key in.
PLACEHOLDER_API_KEY = "REPLACE_WITH_APIFRAME_API_KEY"
# The free read each generation answers: v1 GET /account, v2 GET /v2/me (docs: apiframe-versions.md).
ACCOUNT_PATHS = {"v1": "/account", "v2": "/v2/me"}
HTTP_TIMEOUT_SECONDS = 15


class Unreachable(Exception):
    """No HTTP answer at all (DNS, connection, TLS, timeout, a malformed URL)."""


def _http(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of one request, redirects not followed: the API never redirects, and following
    one would send the key elsewhere."""
    import requests

    try:
        response = requests.request(
            method, url, headers=headers, data=body, timeout=HTTP_TIMEOUT_SECONDS, allow_redirects=False
        )
    except (requests.RequestException, ValueError) as exc:
        raise Unreachable(type(exc).__name__) from None
    return response.status_code, response.content[: 64 * 1024]


# --- the API key ----------------------------------------------------------------------------------


def check_api_key(target: Target, facts: StackFacts) -> Check:
    name = "API key"
    from botocore.exceptions import BotoCoreError, ClientError

    if facts.api_key_parameter:
        source, set_it = (
            f"SSM parameter {facts.api_key_parameter}",
            f"aws ssm put-parameter --name {facts.api_key_parameter} --type SecureString --overwrite "
            "--value '<your APIFRAME API key>'",
        )
    elif facts.api_key_secret_id:
        source, set_it = (
            f"secret {facts.api_key_secret_id}",
            f"aws secretsmanager put-secret-value --secret-id {facts.api_key_secret_id} "
            "--secret-string '<your APIFRAME API key>'",
        )
    else:
        return Check(name, Outcome.FAIL, "the stack names no API key source", "deploy with the template's defaults")
    try:
        if facts.api_key_parameter:
            answer = target.client("ssm").get_parameter(Name=facts.api_key_parameter, WithDecryption=True)
            raw = str(answer["Parameter"]["Value"])
        else:
            secret = target.client("secretsmanager").get_secret_value(SecretId=facts.api_key_secret_id)
            raw = str(secret["SecretString"])
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return Check(
            name,
            Outcome.FAIL,
            f"the {source} cannot be read: {error.get('Code')}: {extra(error.get('Message'))}",
            f"check that it exists and that your credentials may read it; then: {set_it}",
        )
    except (BotoCoreError, KeyError) as exc:
        return Check(name, Outcome.FAIL, f"the {source} cannot be read: {extra(exc)}", set_it)
    key = clean_key(raw)
    if not key:
        return Check(name, Outcome.FAIL, f"the {source} is empty", set_it)
    if key == PLACEHOLDER_API_KEY:
        return Check(
            name,
            Outcome.FAIL,
            f"the {source} still holds the template's placeholder {PLACEHOLDER_API_KEY}: every job would end "
            "FAILED (PROVIDER_REJECTED)",
            set_it,
        )
    return _apiframe_accepts(name, key, source, set_it, facts)


def clean_key(raw: str) -> str:
    """The key as the functions read it (provider/api_key.py): trimmed, or a JSON object's api_key."""
    key = raw.strip()
    if key.startswith("{"):
        try:
            key = str(json.loads(key).get("api_key", "")).strip()
        except (ValueError, AttributeError):
            return key
    return key


def _apiframe_accepts(name: str, key: str, source: str, set_it: str, facts: StackFacts) -> Check:
    version, base = facts.api_version, facts.apiframe_base_url.rstrip("/")
    path = ACCOUNT_PATHS.get(version)
    if path is None or not base:
        return Check(name, Outcome.FAIL, f"unknown APIFRAME generation {version!r} or no base URL", "redeploy")
    header = {"v1": "Authorization", "v2": "X-API-Key"}[version]
    where = f"APIFRAME {version} ({base}{path})"
    try:
        status, body = _http("GET", base + path, {header: key, "Accept": "application/json"})
    except Unreachable as exc:
        return Check(
            name,
            Outcome.FAIL,
            f"{where} cannot be reached ({exc})",
            "check the network and the stack's ApiframeBaseUrl; run doctor again",
        )
    if 200 <= status < 300:
        credits = _credits(body, version)
        left = f": {credits} credits left" if credits is not None else ""
        return Check(name, Outcome.PASS, f"the {source} is set and {where} accepts it{left}")
    if status in (401, 403):
        hint = ""
        if version == "v1" and key.startswith("afk_"):
            hint = "; this looks like a v2 key (afk_...): deploy with ApiframeApiVersion=v2"
        elif version == "v2" and not key.startswith("afk_"):
            hint = "; v2 keys start with afk_: a v1 key needs ApiframeApiVersion=v1"
        return Check(name, Outcome.FAIL, f"{where} refused the key in the {source} (HTTP {status}){hint}", set_it)
    return Check(
        name,
        Outcome.FAIL,
        f"{where} answered HTTP {status}: the key could not be confirmed",
        "check the stack's ApiframeBaseUrl and APIFRAME's status; run doctor again",
    )


def _credits(body: bytes, version: str) -> Any:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    holder = answer.get("team") if version == "v2" else answer
    return holder.get("credits") if isinstance(holder, dict) else None


# --- the webhook route ----------------------------------------------------------------------------


def check_webhook(facts: StackFacts, job_id: str) -> Check:
    """An unsigned webhook for the probe's job: the route must reach the webhook function, which
    must read the table and refuse it with 401."""
    name = "webhook route"
    url = f"{facts.webhook_url.rstrip('/')}/{quote(job_id, safe='')}"
    body = json.dumps({"task_id": "doctor-probe", "status": "processing", "percentage": "0"}, allow_nan=False).encode()
    logs = f"see the webhook function's log group ({facts.log_group('webhook')})"
    try:
        status, _ = _http("POST", url, {"Content-Type": "application/json"}, body)
    except Unreachable as exc:
        return Check(name, Outcome.FAIL, f"{url} cannot be reached ({exc})", logs)
    if status == 401:
        return Check(name, Outcome.PASS, f"an unsigned webhook to {facts.webhook_url}/<job> was refused with 401")
    if 200 <= status < 300:
        return Check(
            name,
            Outcome.FAIL,
            f"an unsigned webhook was accepted (HTTP {status}): anyone could report a job's progress",
            "deploy this repository's webhook function (sam build && sam deploy)",
        )
    if status == 404:
        return Check(
            name, Outcome.FAIL, f"{url} answered 404: the route POST /webhook/{{job_id}} is missing", "sam deploy again"
        )
    cause = "the webhook function failed (its permissions or configuration)" if status >= 500 else "unexpected"
    return Check(name, Outcome.FAIL, f"an unsigned webhook got HTTP {status}, not 401: {cause}", logs)


# --- the alarm topic ------------------------------------------------------------------------------


def check_alarm_subscribers(target: Target, facts: StackFacts) -> Check:
    name = "alarm subscribers"
    if not facts.alarm_topic_arn:
        return Check(name, Outcome.SKIP, "no alarm topic (the local stack has none)")
    from botocore.exceptions import BotoCoreError, ClientError

    subscribe = (
        f"aws sns subscribe --topic-arn {facts.alarm_topic_arn} --protocol email "
        "--notification-endpoint <your address>, then confirm from the e-mail AWS sends"
    )
    try:
        pages = target.client("sns").get_paginator("list_subscriptions_by_topic")
        subscriptions = [s for page in pages.paginate(TopicArn=facts.alarm_topic_arn) for s in page["Subscriptions"]]
    except (ClientError, BotoCoreError) as exc:
        return Check(name, Outcome.WARN, f"the alarm topic's subscriptions cannot be read: {extra(exc)}", subscribe)
    confirmed = [s for s in subscriptions if str(s.get("SubscriptionArn", "")).startswith("arn:")]
    if confirmed:
        endpoints = ", ".join(sorted({f"{s.get('Protocol')}" for s in confirmed}))
        return Check(name, Outcome.PASS, f"the alarm topic has {len(confirmed)} subscriber(s) ({endpoints})")
    if subscriptions:
        return Check(
            name,
            Outcome.WARN,
            "the alarm topic's subscription is not confirmed yet: alarms reach nobody",
            "confirm it from the e-mail AWS sent (or subscribe again)",
        )
    return Check(name, Outcome.WARN, "the alarm topic has no subscriber: alarms reach nobody", subscribe)
