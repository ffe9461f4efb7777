"""The edge: one pure ASGI layer (no BaseHTTPMiddleware: it breaks streaming and contextvars) that
every HTTP request crosses first, wrapping ``send`` once for all of its concerns, each of which
lives with its capability:

- on the way in: the request's ids (``app.observability.context``), then the URL and header size
  limits (414/431, ``app.security.request_limits``) and the body limit (413,
  ``app.security.body_limit``), refused before any other layer reads or logs the request;
- on the way out, in ``http.response.start``: the ids as ``X-Request-ID`` / ``X-Trace-ID``, the
  security headers (``app.security.headers``) and the ``X-RateLimit-*`` headers of the budgets the
  request charged (``app.limits.headers``);
- when the response ends: one access-log line and the HTTP request metric."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.limits.headers import rate_limit_headers
from app.observability.context import accept_request_id, bind_ids, new_trace_id
from app.observability.http import record_http_request, route_template
from app.security.body_limit import (
    BodyLimits,
    PayloadTooLargeError,
    counting_receive,
    declares_too_much,
    payload_too_large,
)
from app.security.headers import RawHeaders, security_headers
from app.security.proxies import TrustedProxies
from app.security.request_limits import size_refusal

logger = structlog.get_logger("app.access")

LOGGED_PATH_CHARS = 512  # a hostile 8 KB path is refused (414), and logged only this far
_ID_HEADERS = frozenset({b"x-request-id", b"x-trace-id"})


def _loggable_path(path: object) -> object:
    if isinstance(path, str) and len(path) > LOGGED_PATH_CHARS:
        return f"{path[:LOGGED_PATH_CHARS]}…[{len(path)} chars]"
    return path


def correlate(scope: Scope) -> RawHeaders:
    """Give the request its request id (the client's X-Request-ID when safe) and a trace id: bound
    for its log lines, kept in its state, and returned as the response headers that echo them."""
    incoming = b""
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            incoming = value
            break
    request_id = accept_request_id(incoming.decode("latin-1") or None)
    trace_id = new_trace_id()
    bind_ids(request_id, trace_id)
    state = scope.setdefault("state", {})
    state["request_id"] = request_id
    state["trace_id"] = trace_id
    return ((b"x-request-id", request_id.encode()), (b"x-trace-id", trace_id.encode()))


def response_headers(
    headers: list[tuple[bytes, bytes]], ids: RawHeaders, security: RawHeaders, scope: Scope
) -> list[tuple[bytes, bytes]]:
    """The response's own headers plus the edge's: the ids replace any the app set, the security
    and rate-limit headers only fill in what it did not set."""
    kept = [(name, value) for name, value in headers if name not in _ID_HEADERS]
    present = {name for name, _ in kept}
    kept.extend(ids)
    kept.extend(header for header in security if header[0] not in present)
    if b"x-ratelimit-limit" not in present:
        kept.extend(rate_limit_headers(scope.get("state") or {}))
    return kept


def log_access(scope: Scope, status: int, duration_s: float) -> None:
    logger.info(
        "request",
        method=scope.get("method"),
        path=_loggable_path(scope.get("path")),
        route=route_template(scope),
        status=status,
        duration_ms=round(duration_s * 1000, 2),
        principal_id=scope["state"].get("principal_id"),
    )
    record_http_request(scope, status, duration_s)


class EdgeMiddleware:
    def __init__(
        self, app: ASGIApp, *, body_limits: BodyLimits, proxies: TrustedProxies | None = None
    ) -> None:
        self.app = app
        self.body_limits = body_limits
        self.proxies = proxies or TrustedProxies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ids = correlate(scope)
        security = security_headers(scope.get("path", ""), https=self.proxies.is_https(scope))
        status: int | None = None

        async def send_with_edge_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = response_headers(
                    list(message.get("headers") or []), ids, security, scope
                )
            await send(message)

        try:
            await self._limited(scope, receive, send_with_edge_headers, lambda: status is not None)
        finally:
            log_access(scope, 500 if status is None else status, time.perf_counter() - started)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, responded: Callable[[], bool]
    ) -> None:
        refusal = size_refusal(scope)
        limit = self.body_limits.limit_for(scope)
        if refusal is None and declares_too_much(scope, limit):
            refusal = payload_too_large(limit)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, counting_receive(receive, limit), send)
        except PayloadTooLargeError:
            if responded():
                raise
            await payload_too_large(limit)(scope, receive, send)
