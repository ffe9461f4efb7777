"""Audit rows of document writes: who did what, and never a credential or address pasted into a field."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from app.db.models import AuditLog
from app.resources import Resources
from tests.support.callers import MakeCaller
from tests.support.documents import upload

pytestmark = pytest.mark.integration

PROVIDER_KEY = "sk-proj-4f9Qx2LmZ7rT8vW1yB6nC3dE"
API_KEY_SECRET = "Zp3xQ9rL2mW8vT1yB6nC4dE7fG0hJ5kM"


async def audit_rows(resources: Resources, document_id: str) -> dict[str, AuditLog]:
    async with resources.session_factory() as session:
        rows = await session.execute(select(AuditLog).where(AuditLog.target_id == document_id))
        return {row.action: row for row in rows.scalars()}


async def test_document_audit_rows_never_store_secrets_pasted_into_titles_tags_or_authors(
    client: httpx.AsyncClient, make_caller: MakeCaller, resources: Resources
) -> None:
    caller = await make_caller()
    api_key = f"rk_0123456789ab_{API_KEY_SECRET}"
    created = await upload(
        client,
        caller.headers,
        b"Rotate the provider key every quarter.",
        filename="notes.txt",
        title=f"Key rotation ({PROVIDER_KEY})",
        tags=f"ops,{api_key}",
    )
    assert created.status_code == 202, created.text
    document_id = created.json()["document_id"]
    patched = await client.patch(
        f"/api/v1/docs/{document_id}",
        json={
            "title": f"Rotation, old key {PROVIDER_KEY}",
            "tags": ["ops", api_key],
            "author": "alice@example.com",
        },
        headers=caller.headers,
    )
    assert patched.status_code == 200, patched.text

    rows = await audit_rows(resources, document_id)
    assert {"document.create", "document.upload", "document.update"} <= set(rows)
    stored = json.dumps([row.details for row in rows.values()])
    for secret in (PROVIDER_KEY, API_KEY_SECRET, "alice@example.com"):
        assert secret not in stored
    assert rows["document.create"].details["title"] == "Key rotation ([REDACTED])"
    assert rows["document.update"].details["author"] == "[EMAIL]"
    assert rows["document.update"].details["tags"] == ["ops", "rk_0123456789ab_[REDACTED]"]
    assert rows["document.upload"].details["version"] == 1
    assert all(row.principal_id == caller.principal_id for row in rows.values())
    # The document itself keeps what its editor wrote; only the audit trail is scrubbed.
    assert patched.json()["title"] == f"Rotation, old key {PROVIDER_KEY}"
