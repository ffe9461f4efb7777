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


class JobCorrelation:
    """The correlation ids of a background job, bound for as long as the job runs.

    ``bind_job_context(job.request_id, job.trace_id)`` binds at once (enough in a task of its
    own, whose context is a copy); used as ``with bind_job_context(...):`` it also restores the
    previous ids on exit, for code that runs several jobs in one context.
    """

    def __init__(self, request_id: str | None, trace_id: str | None) -> None:
        self.request_id = request_id or "job-" + secrets.token_hex(8)
        self.trace_id = trace_id if is_valid_trace_id(trace_id) else new_trace_id()
        self._tokens = (_request_id.set(self.request_id), _trace_id.set(self.trace_id))

    def __enter__(self) -> JobCorrelation:
        return self

    def __exit__(self, *_: object) -> None:
        request_token, trace_token = self._tokens
        _trace_id.reset(trace_token)
        _request_id.reset(request_token)


_W3C_TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}")


def is_valid_trace_id(value: str | None) -> bool:
    """A W3C trace id: 32 lower-case hex digits, not all zero."""
    return value is not None and _W3C_TRACE_ID.fullmatch(value) is not None


def bind_job_context(request_id: str | None, trace_id: str | None) -> JobCorrelation:
    """Bind the ids stored with a background job (fresh ones when it has none) to this context,
    so the job's log lines and spans correlate with the request that enqueued it."""
    return JobCorrelation(request_id, trace_id)
