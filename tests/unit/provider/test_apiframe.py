"""The APIFRAME client: bounded retries where safe, and never a second paid /inpaint by accident."""

from __future__ import annotations

import http.client
import json
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import vary_region.provider.apiframe_v1 as apiframe
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
)
from vary_region.core.errors import ProviderRejected, ProviderUnavailable, RequestNotSent, SubmissionAmbiguous
from vary_region.provider.apiframe_v1 import ApiframeClient, InpaintRequest, RetryPolicy
from vary_region.provider.task_result import TaskState

BASE = "https://api.apiframe.test"
KEY = "sk-raw-api-key-123"
MASK_URL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAAAAAA6mKC9AAAAE0lEQVR4nGNgGAWjYBSMglEAAAQQAAEXxH6XAAAAAElFTkSuQmCC"
)
SECRET = "webhook-secret-Zx81qP"
REQUEST = InpaintRequest(
    parent_task_id="parent-1",
    mask_data_url=MASK_URL,
    prompt="a red balloon",
    webhook_url="https://hooks.example/webhook",
    webhook_secret=SECRET,
)


def response(status: int, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None):
    r = requests.Response()
    r.status_code = status
    r._content = (text if text is not None else json.dumps(body) if body is not None else "").encode()
    r.headers.update(headers or {})
    r.encoding = "utf-8"
    return r


# Exceptions shaped exactly as requests 2.x raises them (checked against a real socket once), with the
# connection and pool they name (built, never connected):
def _pool() -> HTTPSConnectionPool:
    return HTTPSConnectionPool("api.apiframe.test", 443)


def _connection() -> HTTPSConnection:
    return HTTPSConnection("api.apiframe.test", 443)


def connection_refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(_connection(), "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(_pool(), "/inpaint", reason))


def name_not_resolved() -> requests.exceptions.ConnectionError:
    import socket

    reason = NameResolutionError("api.apiframe.test", _connection(), socket.gaierror(-2, "Name or service not known"))
    return requests.exceptions.ConnectionError(MaxRetryError(_pool(), "/inpaint", reason))


def connect_timeout() -> requests.exceptions.ConnectTimeout:
    reason = ConnectTimeoutError(None, "Connection to api.apiframe.test timed out. (connect timeout=3.05)")
    return requests.exceptions.ConnectTimeout(MaxRetryError(_pool(), "/inpaint", reason))


def remote_disconnected() -> requests.exceptions.ConnectionError:
    cause = http.client.RemoteDisconnected("Remote end closed connection without response")
    return requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", cause))


def connection_reset() -> requests.exceptions.ConnectionError:
    cause = ConnectionResetError(104, "Connection reset by peer")
    return requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", cause))


def read_timeout() -> requests.exceptions.ReadTimeout:
    return requests.exceptions.ReadTimeout("HTTPSConnectionPool(host='api.apiframe.test'): Read timed out.")


class FakeSession(requests.Session):
    """Plays scripted outcomes (responses or exceptions) in order; `forever` repeats after the script."""

    def __init__(self, *outcomes: Any, forever: Any = None) -> None:
        super().__init__()
        self.outcomes = list(outcomes)
        self.forever = forever
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        assert not args and isinstance(url, str), "the client passes a str url and keywords only"
        data, headers, timeout = kwargs.pop("data", None), kwargs.pop("headers", None), kwargs.pop("timeout", None)
        sent = _decoded(data)
        call = {"method": method, "url": url, "json": sent, "headers": dict(headers or {}), "timeout": timeout}
        self.calls.append(call | kwargs)
        if self.outcomes:
            outcome = self.outcomes.pop(0)
        elif self.forever is not None:
            outcome = self.forever()
        else:
            raise AssertionError(f"unexpected extra request #{len(self.calls)} to {url}")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    @property
    def paths(self) -> list[str]:
        return [c["url"].removeprefix(BASE) for c in self.calls]


def _decoded(data: bytes | None) -> Any:
    """The JSON body as the server would read it (the client sends it already encoded)."""
    return None if data is None else json.loads(data)


class FakeClock:
    """Stands in for the client's monotonic clock; the injected sleep advances it and records delays."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(apiframe, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


def client(session: FakeSession, clock: FakeClock, **options: Any) -> ApiframeClient:
    return ApiframeClient(BASE + "/", lambda: KEY, session=session, sleep=clock.sleep, **options)


# --- the happy path and what goes over the wire ---------------------------------------------------


def test_given_provider_accepts_when_inpaint_is_submitted_then_task_id_is_returned_after_one_post(clock):
    session = FakeSession(response(200, {"task_id": "29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a"}))

    task_id = client(session, clock).submit(REQUEST)

    assert task_id == "29e983ca-7e86-4017-a9e3-ef6fe9cd5f2a"
    assert session.paths == ["/inpaint"]
    assert clock.sleeps == []


def test_given_a_submission_when_sent_then_body_carries_every_documented_field(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))

    client(session, clock).submit(REQUEST)

    assert session.calls[0]["url"] == BASE + "/inpaint"  # the trailing slash of the base URL is not doubled
    assert session.calls[0]["json"] == {
        "parent_task_id": "parent-1",
        "mask": MASK_URL,
        "prompt": "a red balloon",
        "webhook_url": "https://hooks.example/webhook",
        "webhook_secret": SECRET,
    }


def test_given_no_prompt_when_sent_then_prompt_is_omitted_from_the_body(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))
    request = InpaintRequest("parent-1", MASK_URL, prompt=None, webhook_url=None, webhook_secret=None)

    client(session, clock).submit(request)

    assert session.calls[0]["json"] == {"parent_task_id": "parent-1", "mask": MASK_URL}


def test_given_any_call_when_sent_then_authorization_is_the_raw_key_without_bearer(clock):
    session = FakeSession(response(200, {"task_id": "t1"}), response(200, {"task_id": "t1", "status": "processing"}))
    api = client(session, clock)

    api.submit(REQUEST)
    api.fetch("t1")

    for call in session.calls:
        assert call["headers"]["Authorization"] == KEY
        assert "Bearer" not in call["headers"]["Authorization"]


def test_given_configured_timeouts_when_a_call_is_sent_then_connect_and_read_timeouts_are_always_set(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))

    client(session, clock, connect_timeout=2.0, read_timeout=9.0).submit(REQUEST)

    assert session.calls[0]["timeout"] == (2.0, 9.0)


def test_given_default_client_when_a_call_is_sent_then_a_timeout_is_set(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))

    client(session, clock).submit(REQUEST)

    connect, read = session.calls[0]["timeout"]
    assert 0 < connect <= 30 and 0 < read <= 60


def test_given_an_inpaint_request_when_printed_then_mask_and_secret_are_hidden():
    text = repr(REQUEST) + str(REQUEST) + f"{REQUEST}"

    assert "parent-1" in text
    assert SECRET not in text
    assert MASK_URL not in text and "base64" not in text and "iVBOR" not in text


# --- retries that are safe -----------------------------------------------------------------------


def test_given_429_then_200_when_submitted_then_it_succeeds_after_one_backoff(clock):
    session = FakeSession(response(429, {}), response(200, {"task_id": "t1"}))

    assert client(session, clock).submit(REQUEST) == "t1"
    assert session.paths == ["/inpaint", "/inpaint"]
    assert len(clock.sleeps) == 1
    assert 0 <= clock.sleeps[0] <= RetryPolicy().base_delay


def test_given_429_with_retry_after_when_submitted_then_the_client_waits_that_long(clock):
    session = FakeSession(response(429, {}, headers={"Retry-After": "7"}), response(200, {"task_id": "t1"}))

    assert client(session, clock).submit(REQUEST) == "t1"
    assert clock.sleeps == [7.0]


def test_given_retry_after_longer_than_the_budget_when_submitted_then_it_gives_up_without_waiting(clock):
    session = FakeSession(response(429, {}, headers={"Retry-After": "45"}))

    with pytest.raises(ProviderUnavailable):
        client(session, clock, retry=RetryPolicy(budget_seconds=20)).submit(REQUEST)
    assert clock.sleeps == []
    assert len(session.calls) == 1


@pytest.mark.parametrize("retry_after", ["soon", "Wed, 21 Oct 2015 07:28:00 GMT", "-3", ""])
def test_given_unreadable_retry_after_when_submitted_then_normal_backoff_is_used(clock, retry_after):
    session = FakeSession(
        response(503, text="busy", headers={"Retry-After": retry_after}), response(200, {"task_id": "t1"})
    )

    assert client(session, clock).submit(REQUEST) == "t1"
    assert len(clock.sleeps) == 1 and 0 <= clock.sleeps[0] <= RetryPolicy().base_delay


@pytest.mark.parametrize("status", [408, 429, 503])
def test_given_transient_status_then_200_when_submitted_then_it_is_retried(clock, status):
    # These answers mean the request was not taken: resending cannot pay twice.
    session = FakeSession(response(status, {}), response(200, {"task_id": "t1"}))

    assert client(session, clock).submit(REQUEST) == "t1"
    assert len(session.calls) == 2


@pytest.mark.parametrize("status", [500, 502, 504])
def test_given_500_or_gateway_error_when_submitted_then_ambiguous_and_never_resent(clock, status):
    # A 500 comes from the API's handler, which may have created the task before failing; a gateway
    # error may hide a task the origin created: resending could pay twice.
    session = FakeSession(response(status, {}), response(200, {"task_id": "t1"}))

    with pytest.raises(SubmissionAmbiguous):
        client(session, clock).submit(REQUEST)
    assert len(session.calls) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_given_server_or_gateway_error_when_fetching_then_it_is_retried_because_fetch_is_free(clock, status):
    session = FakeSession(response(status, {}), response(200, {"task_id": "t1", "status": "processing"}))

    assert client(session, clock).fetch("t1").task_id == "t1"
    assert len(session.calls) == 2


def test_given_several_transient_failures_when_submitted_then_backoff_grows_but_stays_bounded(clock):
    session = FakeSession(*[response(503, {})] * 5, response(200, {"task_id": "t1"}))
    policy = RetryPolicy(budget_seconds=1000, base_delay=0.5, max_delay=8.0)

    assert client(session, clock, retry=policy).submit(REQUEST) == "t1"
    assert len(clock.sleeps) == 5
    for attempt, delay in enumerate(clock.sleeps):
        assert 0 <= delay <= min(8.0, 0.5 * 2**attempt)


@pytest.mark.parametrize(
    "error", [connection_refused, name_not_resolved, connect_timeout], ids=["refused", "dns", "connect-timeout"]
)
def test_given_connection_failure_before_sending_when_submitted_then_it_is_retried(clock, error):
    session = FakeSession(error(), response(200, {"task_id": "t1"}))

    assert client(session, clock).submit(REQUEST) == "t1"
    assert session.paths == ["/inpaint", "/inpaint"]


def test_given_500_on_a_later_attempt_when_submitted_then_ambiguous_and_not_resent(clock):
    session = FakeSession(response(503, {}), response(500, {}), response(200, {"task_id": "t1"}))

    with pytest.raises(SubmissionAmbiguous):
        client(session, clock).submit(REQUEST)
    assert len(session.calls) == 2


def test_given_provider_down_for_the_whole_budget_when_submitted_then_provider_unavailable(clock):
    session = FakeSession(forever=lambda: response(503, text="<html>Service Unavailable</html>"))

    with pytest.raises(ProviderUnavailable):
        client(session, clock, retry=RetryPolicy(budget_seconds=20)).submit(REQUEST)
    assert len(session.calls) >= 3  # it did retry...
    assert sum(clock.sleeps) <= 20  # ...but never past its budget


def test_given_connections_refused_for_the_whole_budget_when_submitted_then_provider_unavailable(clock):
    session = FakeSession(forever=connection_refused)

    with pytest.raises(ProviderUnavailable):
        client(session, clock, retry=RetryPolicy(budget_seconds=5)).submit(REQUEST)
    assert len(session.calls) >= 2
    assert sum(clock.sleeps) <= 5


# --- never resend a submission that may have landed ----------------------------------------------


@pytest.mark.parametrize(
    "error",
    [read_timeout, remote_disconnected, connection_reset],
    ids=["read-timeout", "remote-disconnected", "connection-reset"],
)
def test_given_no_answer_after_sending_when_submitted_then_ambiguous_after_exactly_one_post(clock, error):
    session = FakeSession(error(), response(200, {"task_id": "would-be-a-second-paid-task"}))

    with pytest.raises(SubmissionAmbiguous):
        client(session, clock).submit(REQUEST)
    assert len(session.calls) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "answer",
    [
        response(200, {}),
        response(200, {"task_id": ""}),
        response(200, {"task_id": None}),
        response(201, {"task_id": 12345}),
        response(200, ["t1"]),
        response(200, text="OK"),
        response(204),
    ],
    ids=["empty-object", "empty-id", "null-id", "numeric-id", "list", "non-json", "no-content"],
)
def test_given_2xx_without_a_task_id_when_submitted_then_ambiguous_and_not_resent(clock, answer):
    session = FakeSession(answer, response(200, {"task_id": "second"}))

    with pytest.raises(SubmissionAmbiguous):
        client(session, clock).submit(REQUEST)
    assert len(session.calls) == 1


def test_given_read_timeout_on_fetch_when_fetched_then_it_is_retried_because_fetch_is_free(clock):
    session = FakeSession(read_timeout(), response(200, {"task_id": "t1", "status": "processing", "percentage": "40"}))

    result = client(session, clock).fetch("t1")

    assert (result.state, result.percentage) == (TaskState.RUNNING, 40)
    assert len(session.calls) == 2


# --- failures known to happen before anything is sent -------------------------------------------


def test_given_the_api_key_cannot_be_read_when_submitted_then_request_not_sent_and_nothing_is_posted(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))

    def unreadable_key() -> str:
        raise ConnectionError("Secrets Manager unreachable")

    api = ApiframeClient(BASE, unreadable_key, session=session, sleep=clock.sleep)

    with pytest.raises(RequestNotSent) as info:
        api.submit(REQUEST)
    assert session.calls == []
    assert "ConnectionError" in str(info.value)


def test_given_a_body_that_cannot_be_encoded_when_submitted_then_request_not_sent_and_nothing_is_posted(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))
    request = InpaintRequest("parent-1", MASK_URL, prompt=object(), webhook_url=None, webhook_secret=None)  # type: ignore[arg-type]

    with pytest.raises(RequestNotSent):
        client(session, clock).submit(request)
    assert session.calls == []


def test_given_the_api_key_cannot_be_read_when_fetching_then_request_not_sent(clock):
    def unreadable_key() -> str:
        raise RuntimeError("no permission")

    session = FakeSession()

    with pytest.raises(RequestNotSent):
        ApiframeClient(BASE, unreadable_key, session=session, sleep=clock.sleep).fetch("t1")
    assert session.calls == []


def test_given_a_submission_when_sent_then_the_body_is_json_with_its_content_type(clock):
    session = FakeSession(response(200, {"task_id": "t1"}))

    client(session, clock).submit(REQUEST)

    assert session.calls[0]["headers"]["Content-Type"] == "application/json"


# --- refusals are final --------------------------------------------------------------------------


def test_given_400_with_documented_errors_body_when_submitted_then_rejected_with_that_message_and_no_retry(clock):
    session = FakeSession(response(400, {"errors": [{"msg": "Invalid request"}]}))

    with pytest.raises(ProviderRejected) as info:
        client(session, clock).submit(REQUEST)

    assert info.value.status == 400
    assert info.value.message == "Invalid request"
    assert len(session.calls) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "answer"),
    [(401, response(401, {})), (403, response(403, text="")), (401, response(401, text="null"))],
    ids=["401-empty-object", "403-empty-body", "401-json-null"],
)
def test_given_refusal_without_a_message_when_submitted_then_rejected_with_a_generic_message(clock, status, answer):
    session = FakeSession(answer)

    with pytest.raises(ProviderRejected) as info:
        client(session, clock).submit(REQUEST)

    assert info.value.status == status
    assert str(status) in info.value.message
    assert len(session.calls) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"message": "Not enough credits"}, "Not enough credits"),
        ({"error": "parent task is not an upscale"}, "parent task is not an upscale"),
        ({"errors": [{"message": "mask too large"}]}, "mask too large"),
        ({"errors": ["plain string error"]}, "plain string error"),
    ],
)
def test_given_refusal_in_another_error_form_when_submitted_then_its_message_is_reported(clock, body, message):
    session = FakeSession(response(400, body))

    with pytest.raises(ProviderRejected) as info:
        client(session, clock).submit(REQUEST)
    assert info.value.message == message


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>Bad Request</body></html>",
        "",
        "{not json",
        "[]",
        '"just a string"',
        '{"errors": "oops"}',
        '{"errors": [null]}',
        '{"errors": [{}]}',
        '{"errors": [42]}',
        '{"message": 42}',
        "\x00\xff",
    ],
)
def test_given_unexpected_error_body_when_submitted_then_it_never_crashes_the_client(clock, text):
    session = FakeSession(response(400, text=text))

    with pytest.raises(ProviderRejected) as info:
        client(session, clock).submit(REQUEST)
    assert info.value.status == 400
    assert isinstance(info.value.message, str) and info.value.message


def test_given_huge_error_message_when_submitted_then_the_reported_message_is_bounded(clock):
    session = FakeSession(response(400, {"errors": [{"msg": "x" * 100_000}]}))

    with pytest.raises(ProviderRejected) as info:
        client(session, clock).submit(REQUEST)
    assert len(info.value.message) <= 1000


# --- fetch and fetch-many ------------------------------------------------------------------------


def test_given_one_task_id_when_fetched_many_then_fetch_is_used_because_fetch_many_needs_two(clock):
    session = FakeSession(response(200, {"task_id": "t1", "image_urls": ["https://cdn.apiframe.pro/1.png"]}))

    results = client(session, clock).fetch_many(["t1"])

    assert session.paths == ["/fetch"]
    assert session.calls[0]["json"] == {"task_id": "t1"}
    assert [(r.task_id, r.state) for r in results] == [("t1", TaskState.FINISHED)]


@pytest.mark.parametrize("count", [2, 7, 20])
def test_given_2_to_20_task_ids_when_fetched_many_then_one_fetch_many_call_is_made(clock, count):
    ids = [f"t{i}" for i in range(count)]
    session = FakeSession(response(200, {"tasks": [{"task_id": i, "status": "processing"} for i in ids]}))

    results = client(session, clock).fetch_many(ids)

    assert session.paths == ["/fetch-many"]
    assert session.calls[0]["json"] == {"task_ids": ids}
    assert [r.task_id for r in results] == ids


def test_given_more_than_20_task_ids_when_fetched_many_then_it_refuses_without_calling(clock):
    session = FakeSession()

    with pytest.raises(ValueError):
        client(session, clock).fetch_many([f"t{i}" for i in range(21)])
    assert session.calls == []


def test_given_no_task_ids_when_fetched_many_then_nothing_is_called(clock):
    session = FakeSession()

    assert client(session, clock).fetch_many([]) == []
    assert session.calls == []


def test_given_fetch_many_answer_with_malformed_entries_when_parsed_then_good_entries_are_kept(clock):
    tasks = [
        {"task_id": "t1", "status": "failed", "message": "nope"},
        "junk",
        {"status": "processing"},
        None,
        {"task_id": "t2", "percentage": "10"},
    ]
    session = FakeSession(response(200, {"tasks": tasks}))

    results = client(session, clock).fetch_many(["t1", "t2"])

    assert [(r.task_id, r.state) for r in results] == [("t1", TaskState.FAILED), ("t2", TaskState.RUNNING)]
    assert results[0].error_message == "nope"


@pytest.mark.parametrize("body", [{}, {"tasks": None}, {"tasks": "x"}, []])
def test_given_fetch_many_answer_without_a_task_list_when_parsed_then_no_results(clock, body):
    session = FakeSession(response(200, body))

    assert client(session, clock).fetch_many(["t1", "t2"]) == []


def test_given_fetch_is_refused_when_fetched_then_provider_rejected(clock):
    session = FakeSession(response(404, {"message": "task not found"}))

    with pytest.raises(ProviderRejected) as info:
        client(session, clock).fetch("missing")
    assert info.value.status == 404 and info.value.message == "task not found"


def test_given_one_unknown_task_when_fetching_many_then_it_is_left_out_like_fetch_many_does(clock):
    session = FakeSession(response(404, {"errors": [{"msg": "task not found"}]}))

    assert client(session, clock).fetch_many(["gone"]) == []


@pytest.mark.parametrize(
    ("answer", "credits"),
    [
        ({"email": "a@b.c", "credits": 1234, "plan": "pro"}, 1234),
        ({"credits": "88"}, 88),  # a number as a string, as APIFRAME sends percentages
        ({"credits": 12.0, "extra": {"nested": True}}, 12),
        ({"credits": None}, None),
        ({"credits": True}, None),
        ({"credits": "many"}, None),
        ({}, None),
        ([], None),
    ],
)
def test_account_credits_are_read_defensively(answer: Any, credits: int | None) -> None:
    session = FakeSession(response(200, answer))

    assert client(session, FakeClock()).account_credits() == credits
    assert session.calls[0]["method"] == "GET" and session.paths == ["/account"]
    assert session.calls[0]["json"] is None and "Content-Type" not in session.calls[0]["headers"]
