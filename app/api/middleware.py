"""Pure ASGI middleware (no BaseHTTPMiddleware: it breaks streaming and contextvars)."""

from __future__ import annotations

import time

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.context import accept_request_id, bind_ids, new_trace_id
from app.observability.http import record_http_request

logger = structlog.get_logger("app.access")

LOGGED_PATH_CHARS = 512  # a hostile 8 KB path is refused (414), and logged only this far


def _loggable_path(path: object) -> object:
    if isinstance(path, str) and len(path) > LOGGED_PATH_CHARS:
        return f"{path[:LOGGED_PATH_CHARS]}…[{len(path)} chars]"
    return path


class CorrelationMiddleware:
    """Gives every request a request id (the client's X-Request-ID when safe) and a trace id,
    echoes both as response headers and writes one access-log line when the response ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or [])
        request_id = accept_request_id(incoming.get(b"x-request-id", b"").decode("latin-1") or None)
        trace_id = new_trace_id()
        bind_ids(request_id, trace_id)
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["trace_id"] = trace_id
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Trace-ID"] = trace_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            route = scope.get("route")
            duration_s = time.perf_counter() - started
            logger.info(
                "request",
                method=scope.get("method"),
                path=_loggable_path(scope.get("path")),
                route=getattr(route, "path", None),
                status=status_holder["status"],
                duration_ms=round(duration_s * 1000, 2),
                principal_id=scope["state"].get("principal_id"),
            )
            record_http_request(scope, status_holder["status"], duration_s)
