"""The template's answers to the security scanner (`make lint` runs checkov on template.yaml).

A finding that is not fixed is skipped in the template itself, on its resource
(`Metadata.checkov.skip`), with a reason a reviewer can check. These tests keep the skips honest:
each one names a check and gives its reason, and what a reason relies on (a queue's SSE-SQS, the
table's encryption, the bucket's private settings) is still in the template, since checkov no
longer looks once a check is skipped."""

from __future__ import annotations

import re
from typing import Any

from vary_region_local import template

CHECK_ID = re.compile(r"^CKV2?_AWS_[0-9]+$")
SHORTEST_REASON_WORDS = 8


def resources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = template.document()["Resources"]
    return found


def skips(resource: dict[str, Any]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []
    return listed


def skipped(check_id: str) -> set[str]:
    return {name for name, resource in resources().items() if any(s.get("id") == check_id for s in skips(resource))}


def test_every_skip_names_a_check_and_gives_its_reason() -> None:
    bad = [
        (name, skip)
        for name, resource in resources().items()
        for skip in skips(resource)
        if not CHECK_ID.match(str(skip.get("id", "")))
        or len(str(skip.get("comment", "")).split()) < SHORTEST_REASON_WORDS
    ]
    assert bad == []


def test_a_check_is_skipped_at_most_once_per_resource() -> None:
    doubled = [
        name
        for name, resource in resources().items()
        if len({s.get("id") for s in skips(resource)}) != len(skips(resource))
    ]
    assert doubled == []


def test_every_queue_is_encrypted_at_rest_with_sse_sqs() -> None:
    # CKV_AWS_27 only counts a KMS key; the skip's reason is SSE-SQS, so every queue must have it.
    queues = {name for name, resource in resources().items() if resource.get("Type") == "AWS::SQS::Queue"}
    unencrypted = sorted(
        name for name in queues if (resources()[name].get("Properties") or {}).get("SqsManagedSseEnabled") is not True
    )
    assert queues and unencrypted == []
    assert skipped("CKV_AWS_27") <= queues


def test_the_table_is_encrypted_with_a_kms_key() -> None:
    # SSEEnabled true is the AWS managed KMS key (false would be the AWS owned key): CKV_AWS_119's reason.
    assert (template.resource_properties("JobsTable").get("SSESpecification") or {}).get("SSEEnabled") is True


def test_the_bucket_stays_private_and_tls_only() -> None:
    # CKV_AWS_18's reason: no public access, every request over TLS.
    props = template.resource_properties("JobsBucket")
    assert set((props.get("PublicAccessBlockConfiguration") or {}).values()) == {True}
    statements = template.resource_properties("JobsBucketPolicy")["PolicyDocument"]["Statement"]
    assert any(
        s.get("Effect") == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in statements
    )


def test_no_function_reads_the_api_key_from_its_environment() -> None:
    # CKV_AWS_173's reason: only where the key is, never the key.
    for deployed in template.functions().values():
        assert not [name for name in deployed.environment if name in ("APIFRAME_API_KEY", "API_KEY")]
