"""The edge layer: what every response carries from it, whatever the endpoint did, and the
requests it refuses before the app sees them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from app.api.middleware import EdgeMiddleware
from app.errors import install_error_handlers
from app.limits.enforcement import STATE_KEY
from app.limits.limiter import Budget
from app.limits.states import LimitState
from app.security.body_limit import BodyLimits
from app.security.headers import API_CSP

pytestmark = pytest.mark.unit

LIMIT = 1024


def _charged(request: Request, remaining: int) -> None:
    state = LimitState(Budget.chat, 60, remaining, time.time() + 30, "60 per 1 minute")
    request.scope.setdefault("state", {}).setdefault(STATE_KEY, []).append(state)


async def _plain(request: Request) -> Response:
    _charged(request, remaining=41)
    return PlainTextResponse("ok", headers={"X-Request-ID": "the-app-s-own", "X-Frame-Options": "SAMEORIGIN"})


async def _streamed(request: Request) -> StreamingResponse:
    _charged(request, remaining=7)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingResponse(chunks(), media_type="text/plain")


async def _refused(request: Request) -> Response:
    _charged(request, remaining=3)
    return PlainTextResponse("slow down", status_code=429, headers={"X-RateLimit-Limit": "5"})


async def _echo(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    routes = [
        Route("/plain", _plain),
        Route("/streamed", _streamed),
        Route("/refused", _refused),
        Route("/echo", _echo, methods=["POST"]),
    ]
    inner = FastAPI(routes=routes)
    install_error_handlers(inner)  # the app's problem+json handlers, as in production
    app = EdgeMiddleware(inner, body_limits=BodyLimits(LIMIT))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


def _names(response: httpx.Response) -> list[str]:
    return [name.lower() for name, _ in response.headers.multi_items()]


async def test_every_response_carries_ids_security_and_rate_limit_headers_once(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/plain", headers={"X-Request-ID": "client-id-1"})
    assert response.headers["X-Request-ID"] == "client-id-1"  # the edge's ids replace the app's
    assert len(response.headers["X-Trace-ID"]) == 32
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"  # the endpoint's own is kept
    assert response.headers["Content-Security-Policy"] == API_CSP
    assert response.headers["X-RateLimit-Remaining"] == "41"
    names = _names(response)
    assert len(names) == len(set(names))


async def test_a_streamed_response_carries_the_rate_limit_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/streamed")
    assert response.text == "ab"
    assert response.headers["X-RateLimit-Remaining"] == "7"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_response_with_its_own_rate_limit_headers_keeps_them(client: httpx.AsyncClient) -> None:
    response = await client.get("/refused")
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert "X-RateLimit-Remaining" not in response.headers


async def test_a_declared_body_over_the_limit_is_refused_with_the_edge_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/echo", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["trace_id"] == response.headers["X-Trace-ID"]
    assert response.headers["Content-Security-Policy"] == API_CSP


async def test_a_streamed_body_is_counted_as_it_arrives(client: httpx.AsyncClient) -> None:
    async def body(size: int) -> AsyncIterator[bytes]:
        for _ in range(size // 256):
            yield b"x" * 256

    assert (await client.post("/echo", content=body(LIMIT))).text == str(LIMIT)
    refused = await client.post("/echo", content=body(LIMIT + 256))
    assert refused.status_code == 413
    assert refused.json()["code"] == "payload_too_large"
