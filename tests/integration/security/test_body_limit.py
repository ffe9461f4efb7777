"""Request bodies are bounded before authentication or parsing (MAX_REQUEST_BODY_MB), uploads by
their own, larger limit (MAX_UPLOAD_MB)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.auth.principal import Role
from app.settings import Settings
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_request_body_mb": 1, "max_upload_mb": 2})


async def test_oversized_body_is_413_problem_before_auth_or_parsing(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(role=Role.admin)
    big = b'{"role": "reader", "name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await client.post(
        "/api/v1/keys", content=big, headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"


async def test_body_without_content_length_is_counted_as_it_streams(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(role=Role.admin)

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
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    editor = await make_caller(role=Role.editor)
    files = {"file": ("a.txt", b"a" * (1024 * 1024 + 512 * 1024), "text/plain")}
    within = await client.post("/api/v1/docs", files=files, headers=editor.headers)
    assert within.status_code != 413
    files = {"file": ("b.txt", b"b" * (4 * 1024 * 1024), "text/plain")}
    beyond = await client.post("/api/v1/docs", files=files, headers=editor.headers)
    assert beyond.status_code == 413
