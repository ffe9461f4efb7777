from __future__ import annotations

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
