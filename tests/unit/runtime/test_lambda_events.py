"""The Lambda events the functions receive, parsed into typed models, and the answers they give."""

from __future__ import annotations

import base64
import json

import pytest
from vary_region.core.strict_json import JsonRefused
from vary_region.lambda_events import (
    HttpRequest,
    MalformedEvent,
    QueueMessage,
    http_response,
    is_sqs_batch,
    partial_batch_response,
    queue_messages,
)
from vary_region.submit.s3_notifications import uploaded_keys


def _http_api_event(body: str | None, is_base64: bool = False, **extra) -> dict:
    event = {
        "version": "2.0",
        "routeKey": "POST /webhook/{job_id}",
        "rawPath": "/webhook/job%201",
        "headers": {"content-type": "application/json", "x-webhook-secret": "s3cret"},
        "requestContext": {"http": {"method": "POST", "path": "/webhook/job%201"}, "requestId": "r-1"},
        "pathParameters": {"job_id": "job%201"},
        "isBase64Encoded": is_base64,
        "extraField": {"ignored": True},  # API Gateway adds fields over time
    }
    if body is not None:
        event["body"] = body
    return event | extra


def test_given_an_http_api_event_then_the_request_carries_method_route_headers_and_body_bytes():
    request = HttpRequest.from_http_api_event(_http_api_event('{"task_id": "t-1"}'))

    assert request.method == "POST"
    assert request.path_parameters == {"job_id": "job%201"}
    assert request.headers["x-webhook-secret"] == "s3cret"
    assert request.body == b'{"task_id": "t-1"}'


def test_given_a_base64_body_that_is_not_utf8_then_the_raw_bytes_arrive_unchanged():
    raw = b"\xff\xfe not text"

    request = HttpRequest.from_http_api_event(_http_api_event(base64.b64encode(raw).decode(), is_base64=True))

    assert request.body == raw


def test_given_no_body_or_path_parameters_then_they_are_empty():
    event = _http_api_event(None)
    del event["pathParameters"]

    request = HttpRequest.from_http_api_event(event)

    assert (request.body, dict(request.path_parameters)) == (b"", {})


@pytest.mark.parametrize("event", [None, [], {"version": "1.0", "httpMethod": "POST"}, {"Records": []}])
def test_given_an_event_that_is_not_an_http_api_request_then_it_is_refused(event):
    with pytest.raises(MalformedEvent):
        HttpRequest.from_http_api_event(event)


def test_an_http_response_is_json_in_the_shape_api_gateway_expects():
    response = http_response(401, {"message": "unauthorized"})

    assert response["statusCode"] == 401
    assert response["headers"] == {"Content-Type": "application/json"}
    assert json.loads(response["body"]) == {"message": "unauthorized"}
    assert response["isBase64Encoded"] is False


def _sqs_event(*bodies: str) -> dict:
    return {
        "Records": [
            {"messageId": f"m-{i}", "receiptHandle": "h", "body": body, "eventSource": "aws:sqs", "attributes": {}}
            for i, body in enumerate(bodies)
        ]
    }


def test_given_an_sqs_batch_then_each_message_keeps_its_id_and_body():
    messages = queue_messages(_sqs_event('{"a": 1}', "plain"))

    assert [(m.message_id, m.body) for m in messages] == [("m-0", '{"a": 1}'), ("m-1", "plain")]
    assert messages[0].json_body() == {"a": 1}
    with pytest.raises(ValueError):
        messages[1].json_body()


@pytest.mark.parametrize("body", ['{"job_id": "j", "metadata": {"x": NaN}}', "[" * 50_000 + "]" * 50_000])
def test_given_a_body_with_nan_or_deep_nesting_then_it_is_refused_not_read(body):
    (message,) = queue_messages(_sqs_event(body))

    with pytest.raises(JsonRefused):
        message.json_body()


@pytest.mark.parametrize(
    "event, expected",
    [
        (_sqs_event("x"), True),
        ({"Records": [{"eventSource": "aws:s3"}]}, False),
        ({"Records": []}, False),
        ({"detail-type": "Object Created"}, False),
        ("Records", False),
    ],
)
def test_only_an_sqs_event_is_a_queue_batch(event, expected):
    assert is_sqs_batch(event) is expected


def test_given_a_direct_s3_notification_then_it_is_not_read_as_a_queue_batch():
    with pytest.raises(MalformedEvent):
        queue_messages({"Records": [{"eventSource": "aws:s3"}]})


def test_a_partial_batch_response_names_only_the_failed_messages():
    failed = [QueueMessage("m-2", "x"), QueueMessage("m-5", "y")]

    assert partial_batch_response(failed) == {
        "batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-5"}]
    }
    assert partial_batch_response([]) == {"batchItemFailures": []}


def _s3_record(event_name: str, key: str) -> dict:
    return {"eventSource": "aws:s3", "eventName": event_name, "s3": {"bucket": {"name": "b"}, "object": {"key": key}}}


def test_given_an_s3_notification_then_the_created_keys_are_decoded_and_removals_ignored():
    notification = {
        "Records": [
            _s3_record("ObjectCreated:Put", "inbox/job+1/m%C3%A4sk.png"),
            _s3_record("ObjectRemoved:Delete", "inbox/job+1/old.png"),
            _s3_record("ObjectCreated:CompleteMultipartUpload", "inbox/job+1/job.json"),
        ]
    }

    assert uploaded_keys(notification) == ["inbox/job 1/mäsk.png", "inbox/job 1/job.json"]


def test_given_records_that_are_not_s3_notifications_then_they_carry_no_key():
    notification = {"Records": ["text", {"eventName": "ObjectCreated:Put"}, {"eventName": 7}, {"s3": {}}]}

    assert uploaded_keys(notification) == []


def test_given_the_other_notification_shapes_then_their_keys_are_read_as_sent():
    assert uploaded_keys({"Event": "s3:TestEvent", "Records": [_s3_record("ObjectCreated:Put", "k")]}) == []
    eventbridge = {"detail-type": "Object Created", "detail": {"object": {"key": "inbox/job 1/job.json"}}}
    assert uploaded_keys(eventbridge) == ["inbox/job 1/job.json"]
    assert uploaded_keys("not a notification") == []
