"""Adds ``X-RateLimit-*`` headers to every response whose request charged a budget, streaming
responses included (dependency-set headers would not reach a returned ``StreamingResponse``)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.limits.enforcement import remembered
from app.limits.limiter import most_restrictive


class RateLimitHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                states = remembered(scope.get("state") or {})
                headers = MutableHeaders(scope=message)
                if states and "x-ratelimit-limit" not in headers:
                    for name, value in most_restrictive(states).headers().items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_limits)
