from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.auth.principal import Role
from app.settings import Settings
from tests.support.apps import running_app
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration


async def test_api_responses_carry_security_headers_and_a_strict_csp(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller(role=Role.reader)
    for response in (
        await client.get("/healthz"),
        await client.get("/api/v1/me", headers=caller.headers),
        await client.get("/api/v1/me"),  # errors too
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "Strict-Transport-Security" not in response.headers  # plain http


async def test_docs_stay_usable_under_their_own_csp(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200
        csp = response.headers["Content-Security-Policy"]
        assert "https://cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
    assert (await client.get("/openapi.json")).status_code == 200


async def test_hsts_only_over_https_or_from_a_trusted_proxy(settings: Settings) -> None:
    async with running_app(settings, trusted_proxies=["127.0.0.1/32"]) as (_, client, _make):
        forwarded = await client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert forwarded.headers["Strict-Transport-Security"].startswith("max-age=")
    async with running_app(settings, client_addr=("203.0.113.5", 4000)) as (_, client, _make):
        spoofed = await client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in spoofed.headers


@pytest.fixture
async def small_body_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, MakeCaller]]:
    async with running_app(settings, max_request_body_mb=1, max_upload_mb=2) as (_, client, make):
        yield client, make


async def test_oversized_body_is_413_problem_before_auth_or_parsing(
    small_body_client: tuple[httpx.AsyncClient, MakeCaller],
) -> None:
    client, make = small_body_client
    admin = await make(role=Role.admin)
    big = b'{"role": "reader", "name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await client.post(
        "/api/v1/keys", content=big, headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"


async def test_body_without_content_length_is_counted_as_it_streams(
    small_body_client: tuple[httpx.AsyncClient, MakeCaller],
) -> None:
    client, make = small_body_client
    admin = await make(role=Role.admin)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"role": "reader", "name": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/api/v1/keys", content=chunks(), headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_multipart_uploads_get_the_upload_limit_not_the_general_one(
    small_body_client: tuple[httpx.AsyncClient, MakeCaller],
) -> None:
    client, make = small_body_client
    editor = await make(role=Role.editor)
    files = {"file": ("a.txt", b"a" * (1024 * 1024 + 512 * 1024), "text/plain")}
    within = await client.post("/api/v1/docs", files=files, headers=editor.headers)
    assert within.status_code != 413
    files = {"file": ("b.txt", b"b" * (4 * 1024 * 1024), "text/plain")}
    beyond = await client.post("/api/v1/docs", files=files, headers=editor.headers)
    assert beyond.status_code == 413
