from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.api.middleware import EdgeMiddleware
from app.errors import PROBLEM_JSON
from app.security.body_limit import BodyLimits
from app.security.request_limits import MAX_HEADER_BYTES, MAX_HEADERS_TOTAL_BYTES, MAX_URL_BYTES

pytestmark = pytest.mark.unit


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.url.path}?{request.url.query}")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = EdgeMiddleware(Starlette(routes=[Route("/{rest:path}", _echo)]), body_limits=BodyLimits(1024))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status


async def test_ordinary_requests_pass_through(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me", params={"q": "x"}, headers={"X-Request-ID": "abc"})
    assert response.status_code == 200
    assert response.text == "/api/v1/me?q=x"


async def test_url_at_the_limit_passes(client: httpx.AsyncClient) -> None:
    query = "q=" + "a" * (MAX_URL_BYTES - len("/p?q="))
    response = await client.get(f"/p?{query}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "/" + "a" * MAX_URL_BYTES,
        "/p?q=" + "a" * MAX_URL_BYTES,
        "/p?q=" + "a" * (MAX_URL_BYTES - len("/p?q=") + 1),
        "/" + "a." * 16384,
    ],
    ids=["path", "query", "one-byte-over", "masking-bomb"],
)
async def test_long_urls_get_414(client: httpx.AsyncClient, target: str) -> None:
    _assert_problem(await client.get(target), 414, "uri_too_long")


async def test_one_huge_header_gets_431(client: httpx.AsyncClient) -> None:
    response = await client.get("/p", headers={"X-Big": "a" * (MAX_HEADER_BYTES + 1)})
    _assert_problem(response, 431, "headers_too_large")


async def test_many_headers_over_the_total_get_431(client: httpx.AsyncClient) -> None:
    count = MAX_HEADERS_TOTAL_BYTES // (MAX_HEADER_BYTES // 2) + 1
    headers = {f"X-Part-{i}": "a" * (MAX_HEADER_BYTES // 2) for i in range(count)}
    response = await client.get("/p", headers=headers)
    _assert_problem(response, 431, "headers_too_large")


async def test_headers_under_the_limits_pass(client: httpx.AsyncClient) -> None:
    headers = {f"X-Part-{i}": "a" * (MAX_HEADER_BYTES - 100) for i in range(3)}
    response = await client.get("/p", headers=headers)
    assert response.status_code == 200
