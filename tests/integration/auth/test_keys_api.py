from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.auth.principal import Role
from app.db.models import AuditLog
from tests.support.callers import MakeCaller

pytestmark = pytest.mark.integration


async def test_created_key_is_shown_once_and_works_with_its_role(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(tenant="acme", role=Role.admin)
    created = await client.post(
        "/api/v1/keys",
        json={"role": "editor", "name": "ci", "groups": ["hr", "eng", "hr"]},
        headers=admin.headers,
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "key", "tenant", "role", "name", "groups"}
    assert body["groups"] == ["eng", "hr"]
    me = await client.get("/api/v1/me", headers={"X-API-Key": body["key"]})
    assert me.json()["role"] == "editor"
    assert me.json()["groups"] == ["eng", "hr"]
    bad = await client.post(
        "/api/v1/keys", json={"role": "reader", "groups": ["no spaces"]}, headers=admin.headers
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_access"
    listed = await client.get("/api/v1/keys", headers=admin.headers)
    assert body["key"] not in listed.text
    assert {key["id"] for key in listed.json()} >= {body["id"], str(admin.key_id)}


async def test_revoked_key_is_401_at_once_and_revoking_again_is_harmless(
    client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(tenant="acme", role=Role.admin)
    victim = await make_caller(tenant="acme", role=Role.reader)
    assert (await client.delete(f"/api/v1/keys/{victim.key_id}", headers=admin.headers)).status_code == 204
    response = await client.get("/api/v1/me", headers=victim.headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert (await client.delete(f"/api/v1/keys/{victim.key_id}", headers=admin.headers)).status_code == 204


async def test_malformed_key_id_is_422(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    admin = await make_caller(tenant="acme", role=Role.admin)
    assert (await client.delete("/api/v1/keys/not-a-uuid", headers=admin.headers)).status_code == 422


async def test_unknown_role_is_422(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    admin = await make_caller(tenant="acme", role=Role.admin)
    response = await client.post("/api/v1/keys", json={"role": "owner"}, headers=admin.headers)
    assert response.status_code == 422


async def test_a_key_name_with_a_nul_is_422(client: httpx.AsyncClient, make_caller: MakeCaller) -> None:
    admin = await make_caller(role=Role.admin)
    response = await client.post(
        "/api/v1/keys", json={"role": "reader", "name": "ci\u0000"}, headers=admin.headers
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_name"


async def test_key_writes_leave_audit_rows_with_who_what_and_request_id(
    app: FastAPI, client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(tenant="acme", role=Role.admin)
    created = await client.post(
        "/api/v1/keys", json={"role": "reader"}, headers={**admin.headers, "X-Request-ID": "req-create-1"}
    )
    key_id = created.json()["id"]
    await client.delete(f"/api/v1/keys/{key_id}", headers={**admin.headers, "X-Request-ID": "req-revoke-1"})
    async with app.state.resources.session_factory() as session:
        rows = (await session.execute(select(AuditLog).order_by(AuditLog.id))).scalars().all()
    assert [(r.action, r.target_type, r.target_id, r.request_id) for r in rows] == [
        ("api_key.create", "api_key", key_id, "req-create-1"),
        ("api_key.revoke", "api_key", key_id, "req-revoke-1"),
    ]
    assert all(r.principal_id == admin.principal_id and r.tenant_id == admin.tenant_id for r in rows)
    assert all(r.trace_id for r in rows)
    assert created.json()["key"] not in str([r.details for r in rows])


async def test_failed_write_leaves_no_audit_row(
    app: FastAPI, client: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    admin = await make_caller(tenant="acme", role=Role.admin)
    other = await make_caller(tenant="globex", role=Role.reader)
    assert (await client.delete(f"/api/v1/keys/{other.key_id}", headers=admin.headers)).status_code == 404
    async with app.state.resources.session_factory() as session:
        assert (await session.execute(select(AuditLog))).scalars().all() == []
