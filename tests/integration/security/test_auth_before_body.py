"""Nothing of a request body is read before its sender is authenticated, and anonymous requests
cost the per-IP budget like any other."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.settings import Settings
from tests.support.apps import running_app
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration

MB = 1024 * 1024


class CountingBody:
    """An 11 MB multipart body that counts how much of it the server pulled."""

    def __init__(self, megabytes: int = 11) -> None:
        self.megabytes = megabytes
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        for _ in range(self.megabytes):
            self.sent += MB
            yield b"x" * MB
        yield b"\r\n--b--\r\n"


BAD_KEY = {"X-API-Key": "rk_0123456789ab_not-a-real-key"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(11 * MB)}


@pytest.mark.parametrize("headers", [{}, BAD_KEY], ids=["none", "bad"])
async def test_an_upload_without_valid_credentials_is_refused_before_its_body_is_read(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = CountingBody()
    response = await client.post(
        "/api/v1/docs",
        content=body,  # type: ignore[arg-type]
        headers={**headers, **MULTIPART},
    )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert body.sent == 0, f"{body.sent} bytes of the body were read before the 401"


async def test_anonymous_requests_are_rate_limited_per_ip(settings: Settings) -> None:
    async with running_app(settings, rate_limit_per_ip="3/minute") as (_, client, _make):
        codes = [(await client.get("/api/v1/docs")).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        refused = await client.get("/api/v1/docs")
        assert refused.json()["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


async def test_an_authenticated_upload_still_reads_its_body(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    files = {"file": ("notes.txt", b"The archive room is on level two.", "text/plain")}
    response = await client.post("/api/v1/docs", files=files, headers=caller.headers)
    assert response.status_code == 202, response.text
