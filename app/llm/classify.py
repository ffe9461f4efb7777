"""Translating what the SDKs raise into typed provider errors (shared by the HTTP adapters)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

import pydantic

from app.llm.errors import (
    AuthFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
)

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "reduce the length",
    "exceeds the maximum number of tokens",
    "too many tokens",
    "prompt is too long",
)

# The error codes (OpenAI ``content_policy_violation``, Azure OpenAI and Groq ``content_filter``)
# and phrases with which providers refuse a request under their content policy.
_CONTENT_POLICY_MARKERS = (
    "content_policy_violation",
    "content_filter",
    "content management policy",
    "safety system",
)
# Finish reasons that mean "the answer was withheld by a content filter" (OpenAI wire, Gemini).
CONTENT_FILTER_FINISH_REASONS = frozenset(
    {"content_filter", "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
)


def refused_by_content_filter(finish_reason: object) -> bool:
    """Whether a finish reason (an OpenAI-wire string or a Gemini enum) is a content-filter stop."""
    value = getattr(finish_reason, "value", finish_reason)
    return isinstance(value, str) and value in CONTENT_FILTER_FINISH_REASONS


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> ProviderError:
    """The typed error for an HTTP error status and the provider's error message."""
    lowered = message.lower()
    if status == 429:
        return RateLimited(message, upstream_status=status, retry_after=parse_retry_after(headers))
    if status in (401, 403):
        return AuthFailed(message, upstream_status=status)
    if status == 408:
        return ProviderTimeout(message, upstream_status=status)
    if status >= 500:
        return ServerError(message, upstream_status=status, retry_after=parse_retry_after(headers))
    if status in (400, 413, 422) and any(marker in lowered for marker in _CONTEXT_MARKERS):
        return ContextTooLong(message, upstream_status=status)
    if status in (400, 422) and any(marker in lowered for marker in _CONTENT_POLICY_MARKERS):
        return ContentFiltered(message, upstream_status=status)
    return BadRequest(message, upstream_status=status)


def body_message(body: object, fallback: str) -> str:
    """The human message inside an OpenAI- or Google-style error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            parts = [str(inner[key]) for key in ("message", "code") if inner.get(key)]
            if parts:
                return " ".join(parts)
        elif isinstance(inner, str):
            return inner
    return fallback


def headers_of(response: Any) -> Mapping[str, str] | None:
    headers = getattr(response, "headers", None)
    return dict(headers.items()) if headers is not None else None


def from_unexpected(exc: BaseException) -> ProviderError:
    """Transport and parsing failures that are not HTTP status errors."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "timeout" in type(exc).__name__.lower():
        return ProviderTimeout(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, (json.JSONDecodeError, pydantic.ValidationError, KeyError, TypeError, ValueError)):
        return MalformedResponse(f"{type(exc).__name__}: {exc}")
    # Connection refused, reset or dropped mid-body (httpx, httpx2 and aiohttp spell these
    # differently); like a 5xx they are worth one more try.
    return ServerError(f"{type(exc).__name__}: {exc}")
