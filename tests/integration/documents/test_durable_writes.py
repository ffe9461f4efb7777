"""A write is committed before it is acknowledged: a commit that fails is a problem response,
never a 200/202 for something the database did not keep."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Document, DocumentVersion, IngestionJob
from app.resources import Resources
from tests.support.callers import MakeCaller
from tests.support.documents import count_rows, upload

pytestmark = pytest.mark.integration


async def test_a_title_with_a_nul_is_a_422_and_the_old_title_stays(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    caller = await make_caller()
    doc = (await upload(client, caller.headers, b"Plain notes.", filename="notes.txt", title="Notes")).json()
    url = f"/api/v1/docs/{doc['document_id']}"
    patched = await client.patch(url, json={"title": "bad\u0000title"}, headers=caller.headers)
    assert patched.status_code == 422, patched.text
    assert patched.headers["content-type"].startswith("application/problem+json")
    assert patched.json()["code"] == "invalid_title"
    assert "NUL" in patched.json()["detail"]
    assert (await client.get(url, headers=caller.headers)).json()["title"] == "Notes"


async def test_a_value_the_database_refuses_at_commit_is_a_422_not_a_200(
    client: httpx.AsyncClient, make_caller: MakeCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever slips past validation and is refused by PostgreSQL at commit (here: a forced
    ``DataError``) is a 422 problem, and the write is not shown as done."""
    caller = await make_caller()
    doc = (await upload(client, caller.headers, b"Plain notes.", filename="notes.txt", title="Notes")).json()
    url = f"/api/v1/docs/{doc['document_id']}"
    real_commit = AsyncSession.commit

    async def commit_refused(self: AsyncSession, *args: Any, **kwargs: Any) -> None:
        raise sa_exc.DataError("COMMIT", {}, ValueError("integer out of range"))

    monkeypatch.setattr(AsyncSession, "commit", commit_refused)
    patched = await client.patch(url, json={"title": "New title"}, headers=caller.headers)
    monkeypatch.setattr(AsyncSession, "commit", real_commit)
    assert patched.status_code == 422, patched.text
    assert patched.json()["code"] == "invalid_value"
    assert "out of range" in patched.json()["detail"]
    assert (await client.get(url, headers=caller.headers)).json()["title"] == "Notes"


async def test_an_upload_whose_commit_fails_is_refused_and_leaves_nothing(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = await make_caller()
    real_commit = AsyncSession.commit
    failed: list[bool] = []

    async def commit_fails_once(self: AsyncSession, *args: Any, **kwargs: Any) -> None:
        if not failed:
            failed.append(True)
            raise sa_exc.OperationalError("COMMIT", {}, OSError("server closed the connection"))
        await real_commit(self, *args, **kwargs)

    before = await count_rows(resources, Document)
    monkeypatch.setattr(AsyncSession, "commit", commit_fails_once)
    response = await upload(client, caller.headers, b"Plain notes.", filename="notes.txt")
    monkeypatch.undo()
    assert failed, "the upload never committed"
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"
    for model in (DocumentVersion, IngestionJob):
        assert await count_rows(resources, model) == 0
    assert await count_rows(resources, Document) == before
