from __future__ import annotations

import email.utils
import json
import time

import pytest
from google.genai import types as genai_types

from app.llm.classify import from_status, from_unexpected, parse_retry_after, refused_by_content_filter
from app.llm.errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ProviderTimeout,
    RateLimited,
    ServerError,
)

pytestmark = pytest.mark.unit


def test_retry_after_in_seconds_milliseconds_and_http_date() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    parsed = parse_retry_after({"Retry-After": date})
    assert parsed is not None and 25 <= parsed <= 31
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (429, "rate limit", RateLimited),
        (401, "bad key", AuthFailed),
        (403, "forbidden", AuthFailed),
        (500, "oops", ServerError),
        (503, "overloaded", ServerError),
        (408, "timeout", ProviderTimeout),
        (400, "This model's maximum context length is 8192 tokens", ContextTooLong),
        (400, "The input token count (9) exceeds the maximum number of tokens allowed (8)", ContextTooLong),
        (400, "temperature must be <= 2", BadRequest),
    ],
)
def test_http_statuses_map_to_typed_errors(status: int, message: str, expected: type) -> None:
    error = from_status(status, message, {"Retry-After": "1"})
    assert type(error) is expected
    assert error.upstream_status == status


def test_rate_limit_keeps_the_retry_after() -> None:
    error = from_status(429, "slow down", {"Retry-After": "4"})
    assert error.retry_after == 4.0 and error.retryable


def test_transport_failures_map_to_timeouts_malformed_or_server_errors() -> None:
    assert isinstance(from_unexpected(TimeoutError()), ProviderTimeout)
    assert isinstance(from_unexpected(json.JSONDecodeError("bad", "{", 0)), MalformedResponse)
    assert isinstance(from_unexpected(ConnectionResetError("reset")), ServerError)


@pytest.mark.parametrize(
    "message",
    [
        "Your request was rejected as a result of our safety system. content_policy_violation",
        "The prompt was filtered. content_filter",
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
    ],
)
def test_a_content_policy_refusal_is_its_own_error_not_a_bad_request(message: str) -> None:
    error = from_status(400, message)
    assert isinstance(error, ContentFiltered) and error.code == "content_filtered"
    assert not error.retryable and error.cause == "request"
    assert type(from_status(400, "messages must not be empty")) is BadRequest


def test_finish_reasons_of_a_content_filter() -> None:
    assert refused_by_content_filter("content_filter")
    assert refused_by_content_filter(genai_types.FinishReason.SAFETY)
    assert not refused_by_content_filter("stop")
    assert not refused_by_content_filter(genai_types.FinishReason.STOP)
    assert not refused_by_content_filter(None)
