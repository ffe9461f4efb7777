"""Per-request correlation ids, held in contextvars so every log line and span can carry them."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_trace_id() -> str:
    """A W3C trace-context compatible id (32 lowercase hex characters)."""
    return secrets.token_hex(16)


def accept_request_id(candidate: str | None) -> str:
    """The client's X-Request-ID when it is safe to echo into logs and headers, else a fresh one."""
    if candidate and _SAFE_REQUEST_ID.match(candidate):
        return candidate
    return secrets.token_hex(8)


def current_request_id() -> str | None:
    return _request_id.get()


def current_trace_id() -> str | None:
    return _trace_id.get()


def bind_ids(request_id: str, trace_id: str) -> None:
    _request_id.set(request_id)
    _trace_id.set(trace_id)
